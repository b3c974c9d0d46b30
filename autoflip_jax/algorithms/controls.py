"""Controls at AutoFLIP's sparsity: a random and a global-magnitude mask over θ0 (AUTOFLIP.md §6).

They answer "is it the exploration, or just the sparsity?": the same initial model θ0, the same
number of kept kernel weights as AutoFLIP's mask, a different choice of which ones.

* Kernel weights are the parameters AutoFLIP prunes one by one: every leaf with two or more
  dimensions (`masks.is_prunable`: conv, dense and LSTM kernels, embeddings). Biases and
  normalisation parameters are all kept, as our AutoFLIP keeps them: it never prunes them
  individually, only with a removed unit. So the controls keep exactly AutoFLIP's kernel count
  and every bias; their total `kept_params` exceeds AutoFLIP's by the biases of the units
  AutoFLIP removed (a handful).
* Kept kernel count K: with `config.control_sparsity = s > 0`, K = N - round(s N) of the N kernel
  weights. With `s = 0`, AutoFLIP's own K: the `kernel_kept` of the `autoflip` run earlier in the
  same invocation and seed (`Context.earlier_row`, its summary row), else AutoFLIP's exploration
  is run here (`autoflip.init` with the same key, so the same mask an `autoflip` run builds).
  That exploration only sets K: it is not part of the control, so its bytes are not charged.
* `magnitude`: the K kernel weights of largest |θ0| over the whole model (one global ranking, as
  AutoFLIP's single global Tp quantile). Ties are broken by flat index, lower first; the flat
  index runs over the kernel leaves in `jax.tree.leaves` order, row-major inside a leaf.
* `random`: K kernel weights drawn uniformly without replacement with the key
  `fold_in(rng, RANDOM_STREAM)`, `rng` being the algorithm key derived from `config.seed`.
* Equal structure (`config.control_structure`, on by default): AutoFLIP's mask removes whole
  units (filters, neurons, hidden units), which is what cuts its FLOPs. The controls then first
  remove the same NUMBER of units in every unit layer as AutoFLIP's mask did (its summary row's
  `units`, or its mask from the exploration above): `random` draws them uniformly, `magnitude`
  takes the units of smallest L2 norm of their incoming θ0 weights (`structured_unit_mask`;
  removal prunes the unit's bias and its input slice in the next layer, as AutoFLIP's does).
  Then they keep K kernel weights among those left, by the rule above. So all three masks cost
  about the same structured FLOPs; only the choice differs. With `control_sparsity > 0` there is
  no AutoFLIP mask to match and the controls are unstructured.
Both masks are fixed for the whole run.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from flax import traverse_util

from autoflip_jax import masks
from autoflip_jax.algorithms import autoflip
from autoflip_jax.algorithms.base import Algorithm, Start
from autoflip_jax.fields import check_float

PyTree = Any
RANDOM_STREAM = 11  # fold_in tag of the random control's key


def check_config(config, names) -> None:
  check_float(config, 'control_sparsity', 0.0, 1.0, False, True)
  if not isinstance(config.control_structure, bool):
    raise ValueError(f'config.control_structure={config.control_structure!r} must be True or '
                     f'False')
  controls = [n for n in names if n in ('random', 'magnitude')]
  if (controls and config.control_sparsity == 0 and 'autoflip' not in names
      and config.e_exp < 1):
    raise ValueError(f'config.e_exp=0 with algorithm {controls[0]} and control_sparsity=0: its '
                     f'sparsity is AutoFLIP\'s, whose exploration needs at least one epoch (or '
                     f'set config.control_sparsity)')


def kernel_count(tree: PyTree) -> int:
  """Number of kernel entries (leaves with ndim >= 2) of a params or mask tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree) if masks.is_prunable(x)))


kernel_kept = autoflip.kernel_kept  # kept kernel weights of a mask: AutoFLIP's count, the target


def _kernel_flat(tree: PyTree) -> np.ndarray:
  """The kernel leaves (tree order) of a params or mask tree, raveled and concatenated."""
  return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)
                         if masks.is_prunable(x)])


def _from_flat(params0: PyTree, keep_flat: np.ndarray, within: PyTree | None = None) -> PyTree:
  """Splits a flat keep vector over the kernel leaves (tree order); the other leaves are
  `within`'s (all True without it)."""
  leaves, treedef = jax.tree.flatten(params0)
  base = (jax.tree.leaves(within) if within is not None
          else [np.ones(p.shape, bool) for p in leaves])
  out, start = [], 0
  for p, b in zip(leaves, base):
    if masks.is_prunable(p):
      size = int(np.prod(p.shape))
      out.append(keep_flat[start:start + size].reshape(p.shape))
      start += size
    else:
      out.append(np.asarray(b, bool))
  return jax.tree.unflatten(treedef, [jax.numpy.asarray(m) for m in out])


def _available(params0: PyTree, within: PyTree | None) -> np.ndarray:
  """bool over the flat kernel entries: those a control may keep (all, or `within`'s)."""
  if within is None:
    return np.ones((kernel_count(params0),), bool)
  return _kernel_flat(within).astype(bool)


def magnitude_mask(params0: PyTree, kept: int, within: PyTree | None = None) -> PyTree:
  """Keeps the `kept` kernel weights of largest |θ0| (among `within`'s kept entries), ties to
  the lower flat index."""
  flat = np.abs(_kernel_flat(params0).astype(np.float64))
  flat = np.where(_available(params0, within), flat, -1.0)
  order = np.argsort(-flat, kind='stable')
  keep = np.zeros(flat.shape, bool)
  keep[order[:min(kept, int(np.sum(flat >= 0)))]] = True
  return _from_flat(params0, keep, within)


def random_mask(params0: PyTree, kept: int, key: jax.Array,
                within: PyTree | None = None) -> PyTree:
  """Keeps `kept` kernel weights (among `within`'s kept entries) drawn uniformly without
  replacement with `key`."""
  available = _available(params0, within)
  order = np.asarray(jax.random.permutation(key, available.shape[0]))
  order = order[available[order]]
  keep = np.zeros(available.shape, bool)
  keep[order[:kept]] = True
  return _from_flat(params0, keep, within)


def structured_unit_mask(params0: PyTree, units, removed: dict, how: str,
                         key: jax.Array | None = None) -> PyTree:
  """A mask with `removed[layer]` units of every unit layer removed (with their bias and their
  input slices downstream, `masks.structured_mask`): `random` ones (drawn with `key`, one
  stream per layer) or those of smallest L2 norm of incoming θ0 weights (`magnitude`)."""
  flat_p = traverse_util.flatten_dict(params0)
  flat_m = {k: np.ones(v.shape, bool) for k, v in flat_p.items()}
  for i, unit in enumerate(units):
    n = flat_p[unit.kernel].shape[-1] // unit.groups
    count = int(removed.get(unit.name, 0))
    if not 0 <= count < n:
      raise ValueError(f'cannot remove {count} of the {n} units of {unit.name}')
    if how == 'magnitude':
      norm = sum(np.sum(np.asarray(flat_p[p], np.float64).reshape(-1, unit.groups, n) ** 2,
                        axis=(0, 1)) for p in unit.kernels)
      cut = np.argsort(norm, kind='stable')[:count]
    else:
      cut = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), n))[:count]
    for p in unit.kernels:
      k = flat_m[p].reshape(-1, unit.groups, n)
      k[:, :, cut] = False
      flat_m[p] = k.reshape(flat_p[p].shape)
  mask = masks.structured_mask(traverse_util.unflatten_dict(flat_m), units)
  return jax.tree.map(np.asarray, mask)


def target(context, params0: PyTree, rng: jax.Array) -> tuple[int, dict | None, str]:
  """K, the kept kernel count; the units to remove per layer (None: unstructured); and where
  they came from (see the module docstring)."""
  config = context.config
  n = kernel_count(params0)
  if config.control_sparsity > 0:
    return n - int(round(config.control_sparsity * n)), None, 'control_sparsity'
  row = context.earlier_row('autoflip', context.seed) or {}
  if row.get('kernel_kept') is not None and row.get('units') is not None:
    kept, source = int(row['kernel_kept']), 'autoflip run'
    counts = {k: tuple(int(x) for x in v.split('/')) for k, v in row['units'].items()}
  else:
    mask = autoflip.init(context, params0, rng, (config.tp,))[0].mask
    kept, source = kernel_kept(mask), 'autoflip exploration'
    counts = masks.unit_counts(mask, context.units)
  removed = {k: total - alive for k, (alive, total) in counts.items()}
  return kept, removed if config.control_structure else None, source


def make(name: str):
  """The `random` or `magnitude` control: a fixed mask from θ0, nothing between rounds."""
  def init(context, params0: PyTree, rng: jax.Array, tps) -> list[Start]:
    del tps
    kept, removed, source = target(context, params0, rng)
    start = time.time()  # the mask only: an exploration run for K is not the control's cost
    key = jax.random.fold_in(rng, RANDOM_STREAM)
    within = None
    if removed:
      within = structured_unit_mask(params0, context.units, removed, name,
                                    jax.random.fold_in(key, 1))
    if name == 'magnitude':
      mask = magnitude_mask(params0, kept, within)
    else:
      mask = random_mask(params0, kept, key, within)
    n = kernel_count(params0)
    info = {'kernel_kept': kernel_kept(mask), 'kernel_kept_target': kept,
            'kernel_sparsity': 1.0 - kernel_kept(mask) / n, 'sparsity_source': source,
            'units_removed_target': removed}
    return [Start(mask, seconds=time.time() - start, info=info)]

  return lambda config, units: Algorithm(name, init)
