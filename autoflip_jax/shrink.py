"""Structured shrinking: the physically smaller dense model that a masked model equals.

AutoFLIP's structured stage removes whole units (AUTOFLIP.md §2; `masks.structured_mask`). What a
user deploys to an edge device is then not the full model with zeros but a smaller one: fewer
conv filters, dense neurons, MBConv expanded channels, LSTM hidden units. `shrink(model, params,
mask)` builds it: the same module class with `kept_units` set (each unit layer's surviving
original indices), and the params sliced to match, so that

    shrunk.model.apply({'params': shrunk.params}, x) == model.apply({'params': apply_mask(params,
    mask)}, x)

up to float rounding (tests/test_shrink.py, one test per model).

A unit is dropped iff it is dead in the mask: every entry of its producer slices (`Unit.kernels`)
and of its extras (bias, norm scale and offset) is pruned. Such a unit outputs exactly zero in the
masked model (its pre-activation is 0 and its norm's scale and offset are 0; an LSTM unit's gates
see 0, so c and h stay 0; a GroupNorm keeps normalising over the original groups, see
`layers.GroupNorm`), so its consumers' input slices only ever multiply zeros and go with it. The
mask's structured rule makes every removed unit dead; a mask with no dead unit shrinks to the
same sizes. Unstructured zeros inside the kept units stay in `params` (and `mask`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from autoflip_jax.models.units import Unit

PyTree = Any


class Shrunk(NamedTuple):
  model: nn.Module   # the model class with `kept_units` set: fewer units per layer
  params: PyTree     # numpy arrays shaped for `model`, masked values zero
  mask: PyTree       # the mask restricted to the kept units (unstructured zeros remain)
  kept: dict         # {unit layer name: original indices kept}


def alive_units(flat_mask: dict, unit: Unit) -> np.ndarray:
  """bool `[units]`: False where the unit is dead (no kept producer weight, bias or norm entry)."""
  n = flat_mask[unit.kernel].shape[-1] // unit.groups
  alive = np.zeros(n, bool)
  for path in unit.kernels:
    alive |= np.asarray(flat_mask[path]).reshape(-1, unit.groups, n).any(axis=(0, 1))
  for path in unit.extras:
    alive |= np.asarray(flat_mask[path]).reshape(-1, n).any(axis=0)
  return alive


def _take(a: np.ndarray, axis: int, keep: np.ndarray, n: int) -> np.ndarray:
  """Keeps, on an axis of length repeat * n, every index i with i % n in `keep` (in order)."""
  repeat = a.shape[axis] // n
  idx = (np.arange(repeat)[:, None] * n + keep[None, :]).ravel()
  return np.take(a, idx, axis=axis)


def shrink(model: nn.Module, params: PyTree, mask: PyTree) -> Shrunk:
  """The smaller dense model (and its params and mask) equal to `model` under `mask`.

  `model` must declare `units()` and have a `kept_units` field (every model in `models/`); an
  already shrunk model shrinks further (kept indices stay relative to the original model).
  """
  flat_m = {k: np.asarray(v, bool) for k, v in traverse_util.flatten_dict(mask).items()}
  flat_p = {k: np.where(flat_m[k], np.asarray(v), np.zeros((), np.asarray(v).dtype))
            for k, v in traverse_util.flatten_dict(params).items()}  # `masks.apply_mask`
  previous = dict(model.kept_units)
  sliced = set()
  kept = {}
  for unit in model.units():
    alive = alive_units(flat_m, unit)
    keep = np.flatnonzero(alive)
    n = alive.shape[0]
    roles = ([(p, -1) for p in unit.kernels] + [(p, 0) for p in unit.extras]
             + list(unit.consumers))
    for path, axis in roles:
      axis = axis % flat_p[path].ndim
      if (path, axis) in sliced:
        raise ValueError(f'{path} axis {axis} belongs to two units (second: {unit.name})')
      sliced.add((path, axis))
      flat_p[path] = _take(flat_p[path], axis, keep, n)
      flat_m[path] = _take(flat_m[path], axis, keep, n)
    original = previous.get(unit.name, tuple(range(n)))
    kept[unit.name] = tuple(int(original[i]) for i in keep)
  small = model.clone(kept_units=tuple(kept.items()))
  return Shrunk(small, traverse_util.unflatten_dict(flat_p), traverse_util.unflatten_dict(flat_m),
                kept)


def check_shapes(shrunk: Shrunk, example_input: jax.Array) -> None:
  """Raises if the shrunk params do not have exactly the shapes `shrunk.model` initialises."""
  want = jax.eval_shape(shrunk.model.init, jax.random.key(0), example_input)['params']
  shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)
  if shapes(want) != shapes(shrunk.params):
    raise ValueError(f'shrunk params {shapes(shrunk.params)} do not match the shrunk model '
                     f'{shapes(want)}')
