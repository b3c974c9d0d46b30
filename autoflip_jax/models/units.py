"""Structured units: which slices of which parameters make up one filter, neuron or hidden unit.

A model declares its units once (`Model.units()`); the structured mask rule and the accounting read
them from here. A `Unit` is a layer's set of output units (conv filters, dense neurons, recurrent
units). Unit `u` owns:
  * the producer kernel's slice `[..., u]` on its last axis (the unit's incoming weights),
  * index `u` of each 1-D `extras` parameter (bias, normalisation scale and offset),
  * the input slice of every consumer kernel on the given axis. A consumer's input axis may be
    `repeat` times longer than the number of units (a conv feeding a dense layer through an HWC
    flatten); then input index `i` belongs to unit `i % num_units`.
"""

from __future__ import annotations

from typing import NamedTuple

Path = tuple[str, ...]


class Unit(NamedTuple):
  name: str
  kernel: Path                          # producer kernel; units on its last axis
  extras: tuple[Path, ...] = ()         # 1-D params indexed by unit (bias, norm scale/offset)
  consumers: tuple[tuple[Path, int], ...] = ()  # (kernel path, input axis)


def get_path(tree, path: Path):
  for key in path:
    tree = tree[key]
  return tree
