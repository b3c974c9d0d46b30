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

Training on it. `plan(model, mask)` records the shrinking without touching params: the smaller
model and, for every parameter, the positions kept on each of its unit axes. `take` slices any
params-shaped tree with it (params, a mask, an optax state's moments; with leading variant axes)
and `put` puts a smaller tree back in zeros shaped like the full one. The federated round uses
them inside its one jitted program (`federated.make_variant_round_fn(shrink_plan=...)`): the
clients train the smaller model, the server state keeps the full shapes (docs/structured.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util


PyTree = Any


class Shrunk(NamedTuple):
  model: nn.Module   # the model class with `kept_units` set: fewer units per layer
  params: PyTree     # numpy arrays shaped for `model`, masked values zero
  mask: PyTree       # the mask restricted to the kept units (unstructured zeros remain)
  kept: dict         # {unit layer name: original indices kept}


class Plan(NamedTuple):
  """How a mask shrinks a model: the smaller model and, per parameter, what to keep where."""
  model: nn.Module   # the model class with `kept_units` set
  kept: dict         # {unit layer name: original indices kept}
  slices: dict       # {param path: ((axis, positions kept on it), ...)} in slicing order
  sizes: dict = {}   # {unit layer name: its units before this shrinking}

  @property
  def removes_any(self) -> bool:
    """Whether any unit goes (else the shrunk model is the model itself)."""
    return any(len(self.kept[name]) < n for name, n in self.sizes.items())

  @property
  def key(self) -> tuple:
    """Hashable identity of the shrunk shapes (one compiled round per distinct key)."""
    return tuple((name, idx) for name, idx in sorted(self.kept.items()))


def _positions(size: int, keep: np.ndarray, n: int) -> np.ndarray:
  """On an axis of length repeat * n, every index i with i % n in `keep` (in order)."""
  repeat = size // n
  return (np.arange(repeat)[:, None] * n + keep[None, :]).ravel()


def _aligned(alive: np.ndarray, align: int) -> np.ndarray:
  """The alive indices, and as few dead ones (the first) as make their count a multiple of
  `align` (or all of them)."""
  keep = np.flatnonzero(alive)
  short = min(-len(keep) % align, len(alive) - len(keep))
  if short:
    keep = np.sort(np.concatenate([keep, np.flatnonzero(~alive)[:short]]))
  return keep


def _slices(units, mask: PyTree, align: int = 1) -> tuple[dict, dict, dict]:
  """(slices, kept unit indices, unit counts) of `units` under `mask` (see `Plan`): the alive
  units, topped up with dead ones to a multiple of `align` units per layer."""
  flat_m = {k: np.asarray(v, bool) for k, v in traverse_util.flatten_dict(mask).items()}
  slices: dict = {}
  alive_idx, sizes = {}, {}
  for unit in units:
    alive = unit.alive(flat_m)
    keep = _aligned(alive, align)
    n = alive.shape[0]
    roles = ([(p, -1) for p in unit.kernels] + [(p, 0) for p in unit.extras]
             + list(unit.consumers))
    for path, axis in roles:
      axis = axis % flat_m[path].ndim
      if any(a == axis for a, _ in slices.get(path, ())):
        raise ValueError(f'{path} axis {axis} belongs to two units (second: {unit.name})')
      idx = _positions(flat_m[path].shape[axis], keep, n)
      slices[path] = slices.get(path, ()) + ((axis, idx),)
      flat_m[path] = np.take(flat_m[path], idx, axis=axis)
    alive_idx[unit.name], sizes[unit.name] = keep, n
  return slices, alive_idx, sizes


def plan(model: nn.Module, mask: PyTree, align: int = 1) -> Plan:
  """The shrinking of `model` under `mask` (see the module docstring), without touching params.

  An already shrunk model shrinks further (kept indices stay relative to the original model).
  `align` > 1 keeps a multiple of that many units in every unit layer (or all of them): the
  first dead units fill up the count. They stay masked at zero, so the shrunk model still
  equals the masked one, and some kernels run faster on aligned widths
  (`models.layers.unit_alignment`). Accounting counts the alive units only
  (`shrunk_params`).
  """
  slices, alive_idx, sizes = _slices(model.units(), mask, align)
  previous = dict(model.kept_units)
  kept = {}
  for name, keep in alive_idx.items():
    original = previous.get(name, tuple(range(sizes[name])))
    kept[name] = tuple(int(original[i]) for i in keep)
  return Plan(model.clone(kept_units=tuple(kept.items())), kept, slices, sizes)


def shrunk_params(mask: PyTree, units) -> tuple[int, int]:
  """(parameters of the shrunk model, units of the full one) under `mask`: what a client that
  holds the structure needs to place the kept values, `accounting.mask_bytes`."""
  slices, _, sizes = _slices(units, mask)
  total = 0
  for path, m in traverse_util.flatten_dict(mask).items():
    shape = list(np.shape(m))
    for axis, idx in slices.get(path, ()):
      shape[axis] = len(idx)
    total += int(np.prod(shape))
  return total, int(sum(sizes.values()))


def _params_parts(fn, like: PyTree, *trees: PyTree) -> PyTree:
  """`fn` on every params-shaped part of `trees` (same structure as `like`), the rest as is."""
  structure = jax.tree.structure(like)
  is_params = lambda x: jax.tree.structure(x) == structure
  return jax.tree.map(lambda *xs: fn(*xs) if is_params(xs[0]) else xs[0], *trees,
                      is_leaf=is_params)


def take(tree: PyTree, the_plan: Plan, like: PyTree, lead: int = 0) -> PyTree:
  """`tree` restricted to the kept units: every params-shaped part of it (params, a mask, an
  optax state's moments: whatever has `like`'s structure) is sliced, with `lead` leading axes
  (variants) before the params' own. Numpy arrays stay numpy; jax arrays (or tracers) use jnp."""
  def one(params_tree):
    flat = traverse_util.flatten_dict(params_tree)
    for path, cuts in the_plan.slices.items():
      for axis, idx in cuts:
        a = flat[path]
        flat[path] = (np.take if isinstance(a, np.ndarray) else jnp.take)(a, idx, axis=axis + lead)
    return traverse_util.unflatten_dict(flat)
  return _params_parts(one, like, tree)


def put(small: PyTree, full: PyTree, the_plan: Plan, like: PyTree, lead: int = 0) -> PyTree:
  """The inverse of `take`: `small`'s params-shaped parts at their places in zeros (False for a
  mask) shaped like `full`'s; the other leaves are `small`'s. Exact wherever `full`'s entries
  outside the kept units are zero, as a mask makes them (pruned params, their optimizer state)."""
  def one(small_tree, full_tree):
    flat = traverse_util.flatten_dict(small_tree)
    shapes = {k: v.shape for k, v in traverse_util.flatten_dict(full_tree).items()}
    for path, cuts in the_plan.slices.items():
      x = flat[path]
      for axis, idx in reversed(cuts):
        shape = list(x.shape)
        shape[axis + lead] = shapes[path][axis + lead]
        where = (slice(None),) * (axis + lead) + (idx,)
        x = jnp.zeros(shape, x.dtype).at[where].set(x)
      flat[path] = x
    return traverse_util.unflatten_dict(flat)
  return _params_parts(one, like, small, full)


def shrink(model: nn.Module, params: PyTree, mask: PyTree) -> Shrunk:
  """The smaller dense model (and its params and mask) equal to `model` under `mask`.

  `model` must declare `units()` and have a `kept_units` field (every model in `models/`); an
  already shrunk model shrinks further (kept indices stay relative to the original model).
  """
  flat_m = {k: np.asarray(v, bool) for k, v in traverse_util.flatten_dict(mask).items()}
  masked = traverse_util.unflatten_dict(
      {k: np.where(flat_m[k], np.asarray(v), np.zeros((), np.asarray(v).dtype))
       for k, v in traverse_util.flatten_dict(params).items()})  # `masks.apply_mask`
  the_plan = plan(model, mask)
  mask_np = traverse_util.unflatten_dict(flat_m)
  return Shrunk(the_plan.model, take(masked, the_plan, mask_np), take(mask_np, the_plan, mask_np),
                the_plan.kept)


def check_shapes(shrunk: Shrunk, example_input: jax.Array) -> None:
  """Raises if the shrunk params do not have exactly the shapes `shrunk.model` initialises."""
  want = jax.eval_shape(shrunk.model.init, jax.random.key(0), example_input)['params']
  shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)
  if shapes(want) != shapes(shrunk.params):
    raise ValueError(f'shrunk params {shapes(shrunk.params)} do not match the shrunk model '
                     f'{shapes(want)}')
