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
Both masks are unstructured and fixed for the whole run.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from autoflip_jax import masks
from autoflip_jax.algorithms import autoflip
from autoflip_jax.algorithms.base import Algorithm, Start
from autoflip_jax.fields import check_float

PyTree = Any
RANDOM_STREAM = 11  # fold_in tag of the random control's key


def check_config(config, names) -> None:
  check_float(config, 'control_sparsity', 0.0, 1.0, False, True)
  controls = [n for n in names if n in ('random', 'magnitude')]
  if (controls and config.control_sparsity == 0 and 'autoflip' not in names
      and config.e_exp < 1):
    raise ValueError(f'config.e_exp=0 with algorithm {controls[0]} and control_sparsity=0: its '
                     f'sparsity is AutoFLIP\'s, whose exploration needs at least one epoch (or '
                     f'set config.control_sparsity)')


def kernel_count(tree: PyTree) -> int:
  """Number of kernel entries (leaves with ndim >= 2) of a params or mask tree."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree) if masks.is_prunable(x)))


def kernel_kept(mask: PyTree) -> int:
  """Number of kept kernel weights of a mask."""
  return int(sum(np.count_nonzero(np.asarray(m)) for m in jax.tree.leaves(mask)
                 if masks.is_prunable(m)))


def _from_flat(params0: PyTree, keep_flat: np.ndarray) -> PyTree:
  """Splits a flat keep vector over the kernel leaves (tree order); other leaves all True."""
  leaves, treedef = jax.tree.flatten(params0)
  out, start = [], 0
  for p in leaves:
    if masks.is_prunable(p):
      size = int(np.prod(p.shape))
      out.append(keep_flat[start:start + size].reshape(p.shape))
      start += size
    else:
      out.append(np.ones(p.shape, bool))
  return jax.tree.unflatten(treedef, [jax.numpy.asarray(m) for m in out])


def magnitude_mask(params0: PyTree, kept: int) -> PyTree:
  """Keeps the `kept` kernel weights of largest |θ0|, ties to the lower flat index."""
  flat = np.concatenate([np.abs(np.asarray(p, np.float64)).ravel()
                         for p in jax.tree.leaves(params0) if masks.is_prunable(p)])
  order = np.argsort(-flat, kind='stable')
  keep = np.zeros(flat.shape, bool)
  keep[order[:kept]] = True
  return _from_flat(params0, keep)


def random_mask(params0: PyTree, kept: int, key: jax.Array) -> PyTree:
  """Keeps `kept` kernel weights drawn uniformly without replacement with `key`."""
  n = kernel_count(params0)
  keep = np.zeros((n,), bool)
  keep[np.asarray(jax.random.permutation(key, n))[:kept]] = True
  return _from_flat(params0, keep)


def target_kept(context, params0: PyTree, rng: jax.Array) -> tuple[int, str]:
  """K, the kept kernel count, and where it came from (see the module docstring)."""
  config = context.config
  n = kernel_count(params0)
  if config.control_sparsity > 0:
    return n - int(round(config.control_sparsity * n)), 'control_sparsity'
  row = context.earlier_row('autoflip', context.seed) or {}
  if row.get('kernel_kept') is not None:
    return int(row['kernel_kept']), 'autoflip run'
  mask = autoflip.init(context, params0, rng, (config.tp,))[0].mask
  return kernel_kept(mask), 'autoflip exploration'


def make(name: str):
  """The `random` or `magnitude` control: a fixed mask from θ0, nothing between rounds."""
  def init(context, params0: PyTree, rng: jax.Array, tps) -> list[Start]:
    del tps
    kept, source = target_kept(context, params0, rng)
    start = time.time()  # the mask only: an exploration run for K is not the control's cost
    if name == 'magnitude':
      mask = magnitude_mask(params0, kept)
    else:
      mask = random_mask(params0, kept, jax.random.fold_in(rng, RANDOM_STREAM))
    n = kernel_count(params0)
    info = {'kernel_kept': kept, 'kernel_sparsity': 1.0 - kept / n, 'sparsity_source': source}
    return [Start(mask, seconds=time.time() - start, info=info)]

  return lambda config, units: Algorithm(name, init)
