"""Structured units: which slices of which parameters make up one filter, neuron or hidden unit.

A model declares its units once (`Model.units()`); the structured mask rule, the shrinking to a
smaller dense model and the accounting read them from here. A `Unit` is a layer's set of output
units (conv filters, dense neurons, recurrent hidden units). Unit `u` owns:
  * the slice `[..., u]` on the last axis of its producer kernel, and of every further producer
    kernel in `producers` (its incoming weights). With `groups > 1` a producer's last axis is
    `groups * units` long and unit `u` owns the indices `{u, units + u, 2 units + u, ...}`, i.e.
    every index `i` with `i % units == u`: the fused gates of an LSTM, `[i | f | g | o]`;
  * index `u` of each 1-D `extras` parameter (bias, normalisation scale and offset, the bias of a
    squeeze-excitation gate); an extra may also be `groups * units` long (an LSTM's fused bias);
  * the input slice of every consumer kernel on the given axis. A consumer's input axis may be
    `repeat` times longer than the number of units (a conv feeding a dense layer through an HWC
    flatten); then input index `i` belongs to unit `i % num_units`. A consumer slice is removed
    with the unit but does not count as an incoming weight of it (an LSTM's recurrent kernel is
    both: its columns are producers, its row `u` a consumer of the same unit).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

Path = tuple[str, ...]


class Unit(NamedTuple):
  name: str
  kernel: Path                          # producer kernel; units on its last axis
  extras: tuple[Path, ...] = ()         # 1-D params indexed by unit (bias, norm scale/offset)
  consumers: tuple[tuple[Path, int], ...] = ()  # (kernel path, input axis)
  producers: tuple[Path, ...] = ()      # further producer kernels (an LSTM's recurrent kernel)
  groups: int = 1                       # producers' last axis is groups * units (fused gates)

  @property
  def kernels(self) -> tuple[Path, ...]:
    """Every producer kernel: the unit's incoming weights are its slices of these."""
    return (self.kernel,) + tuple(self.producers)

  def alive(self, flat_mask: dict, extras: bool = True) -> np.ndarray:
    """bool `[units]` of a mask given as {path: array}: True where the unit keeps an incoming
    weight or, with `extras`, a bias or normalisation entry. A unit with none is dead: the
    structured counts (`masks.unit_counts`, incoming weights only) and the shrinking
    (`shrink.plan`, extras too) remove it."""
    n = flat_mask[self.kernel].shape[-1] // self.groups
    alive = np.zeros(n, bool)
    for path in self.kernels:
      alive |= np.asarray(flat_mask[path]).reshape(-1, self.groups, n).any(axis=(0, 1))
    for path in self.extras if extras else ():
      alive |= np.asarray(flat_mask[path]).reshape(-1, n).any(axis=0)
    return alive


def get_path(tree, path: Path):
  for key in path:
    tree = tree[key]
  return tree
