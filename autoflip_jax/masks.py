"""Hybrid pruning masks from the guidance matrix (AutoFLIP, Sec. 3.2; `../shared/AUTOFLIP.md` §2).

A mask is a pytree of booleans shaped exactly like the params: `True` keeps a parameter.

The hybrid rule, in two stages:

1. Unstructured. Every kernel (a parameter with two or more dimensions) is prunable weight by
   weight. `tp` is ONE global quantile over the normalised guidance of all prunable weights of the
   model (not per layer): a weight is kept iff its guidance is *strictly greater* than
   `quantile(G, tp)`. Strictness is the reference code's rule: every weight tied at the threshold is
   pruned. Weights that never moved during exploration all have guidance 0 and tie, so the sparsity
   reached can be far above `tp`; the accounting reports the sparsity actually reached.
   Biases and normalisation parameters are never pruned one by one (the reference prunes biases
   with the same rule; we do not): they go only with their unit.
2. Structured. Each declared unit (conv filter, dense neuron, recurrent unit; see
   `models/units.py`) is removed when the share of its incoming weights pruned in stage 1 reaches
   `structured_threshold` (1.0: only units with every incoming weight pruned; for an LSTM unit the
   incoming weights are its four gate columns in the input and the recurrent kernel), or, when
   `structured_tp > 0`, also when its mean guidance is below the `structured_tp`-quantile of the
   unit scores of its layer (`scope='layer'`, the default rule: `algorithms/autoflip.py` passes
   Tp itself) or of every unit of the model (`scope='global'`). Removing a unit prunes its incoming kernel slice, its bias (and any
   other per-unit parameter) and the matching input slice of every consumer layer, so a shrunk
   dense model can drop it physically. Units are processed in declaration order (input to output),
   so a unit left without live inputs by an earlier removal is itself removed. The classifier's
   outputs are never units, so no class is ever removed.

Everything that builds a mask is `jnp` without data-dependent Python control flow, so the mask
can be rebuilt inside the jitted round (`guidance_per_round`); `apply_mask` and `normalize` are
jitted so that an eager call compiles one program, not one per leaf and op (`unit_counts`, which
returns Python ints, reads the mask with numpy).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from autoflip_jax.models.units import Unit

PyTree = Any


def is_prunable(p) -> bool:
  """Kernels (ndim >= 2) are pruned weight by weight; biases and norm params only with a unit."""
  return p.ndim >= 2


def ones_mask(params: PyTree) -> PyTree:
  """The dense mask (FedAvg)."""
  return jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)


@jax.jit
def apply_mask(tree: PyTree, mask: PyTree) -> PyTree:
  """Zeroes every masked-out entry. Exact zeros, whatever was there (also NaN or inf)."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), tree, mask)


SPARSE_INITS = ('', 'fan_in')


@jax.jit
def rescale_fan_in(params: PyTree, mask: PyTree) -> PyTree:
  """θ0 rescaled for the mask it will train under (`config.sparse_init='fan_in'`).

  Every kernel (a leaf whose name ends in `kernel`: dense, conv, LSTM input and recurrent
  kernels) has each output column multiplied by sqrt(n / n_kept), n its fan-in (every axis but
  the last) and n_kept the inputs the mask keeps in that column, so a column's pre-activation
  variance at initialisation is what its initialiser meant for the full fan-in (the sparse
  initialisation of Evci et al. 2022, "Gradient flow in sparse neural networks and how lottery
  tickets win"). Columns that keep every input, or none, are unchanged (a factor of exactly 1);
  an all-kept mask returns θ0 bit for bit. Embeddings and 1-D parameters are untouched.
  """
  flat_p = traverse_util.flatten_dict(params)
  flat_m = traverse_util.flatten_dict(mask)
  out = {}
  for path, p in flat_p.items():
    if p.ndim < 2 or not str(path[-1]).endswith('kernel'):
      out[path] = p
      continue
    fan_in = p.size // p.shape[-1]
    kept = jnp.sum(flat_m[path].reshape(-1, p.shape[-1]).astype(jnp.float32), axis=0)
    scale = jnp.where(kept > 0, jnp.sqrt(fan_in / jnp.maximum(kept, 1.0)), 1.0)
    out[path] = (p * scale).astype(p.dtype)
  return traverse_util.unflatten_dict(out)


@functools.partial(jax.jit, static_argnames='method')
def normalize(guidance: PyTree, method: str = 'minmax') -> PyTree:
  """Per-tensor normalisation of the guidance (AUTOFLIP.md §1).

  `minmax`: (g - min) / (max - min), a constant tensor maps to 0. `robust`: (g - median) / IQR,
  with an IQR of 0 treated as 1. Ranks inside a tensor are unchanged by either; across tensors they
  decide how the global `tp` quantile splits the pruning between layers.
  """
  def minmax(g):
    lo, hi = jnp.min(g), jnp.max(g)
    span = hi - lo
    return jnp.where(span > 0, (g - lo) / jnp.where(span > 0, span, 1.0), jnp.zeros_like(g))

  def robust(g):
    q1, med, q3 = jnp.quantile(g, jnp.array([0.25, 0.5, 0.75]))
    iqr = q3 - q1
    return (g - med) / jnp.where(iqr > 0, iqr, 1.0)

  fns = {'minmax': minmax, 'robust': robust}
  if method not in fns:
    raise ValueError(f'guidance normalization {method!r} is not one of {tuple(fns)}')
  return jax.tree.map(fns[method], guidance)


def threshold(guidance: PyTree, tp: float) -> jax.Array:
  """The global `tp`-quantile (linear interpolation) over all prunable guidance values."""
  flat = jnp.concatenate([g.ravel() for g in jax.tree.leaves(guidance) if is_prunable(g)])
  return jnp.quantile(flat, tp)


def unstructured_mask(guidance: PyTree, tp: float) -> PyTree:
  """Stage 1: keep a kernel weight iff its guidance > quantile(G, tp); keep all non-kernels."""
  q = threshold(guidance, tp)
  return jax.tree.map(lambda g: g > q if is_prunable(g) else jnp.ones(g.shape, bool), guidance)


def _unit_expand(keep_u: jax.Array, size: int) -> jax.Array:
  """Unit keep-flags to an axis of `size` = repeat * units: index i belongs to unit i % units."""
  return jnp.tile(keep_u, size // keep_u.shape[0])


def _along(flags: jax.Array, ndim: int, axis: int) -> jax.Array:
  shape = [1] * ndim
  shape[axis] = flags.shape[0]
  return flags.reshape(shape)


def _per_unit_sum(x: jax.Array, groups: int) -> jax.Array:
  """Sums a producer kernel (or its guidance) over every axis but the unit: `[units]`."""
  return jnp.sum(x.reshape(-1, groups, x.shape[-1] // groups), axis=(0, 1))


SCOPES = ('layer', 'global')


def _off(structured_tp) -> bool:
  """`structured_tp` None or a Python 0: no removal by guidance (a traced value is on)."""
  return structured_tp is None or (isinstance(structured_tp, (int, float)) and structured_tp <= 0)


def unit_scores(guidance: PyTree, units: Sequence[Unit]) -> list[jax.Array]:
  """Each unit layer's scores `[units]`: the mean guidance of every unit's incoming weights."""
  flat_g = traverse_util.flatten_dict(guidance)
  out = []
  for unit in units:
    count = sum(flat_g[p].size // flat_g[p].shape[-1] * unit.groups for p in unit.kernels)
    out.append(sum(_per_unit_sum(flat_g[p], unit.groups) for p in unit.kernels) / count)
  return out


def structured_mask(mask: PyTree, units: Sequence[Unit], structured_threshold: float = 1.0,
                    guidance: PyTree | None = None, structured_tp=0.0,
                    scope: str = 'layer') -> PyTree:
  """Stage 2: removes whole units and everything that belongs to them (see module docstring).

  A unit's pruned share and its guidance score are taken over all its incoming weights: its
  slices of every producer kernel (`Unit.kernels`; for an LSTM unit, its four gate columns in both
  the input and the recurrent kernel). With `structured_tp` (a float in (0, 1) or a traced
  scalar; None or 0 = off) a unit is also removed when its score is below the `structured_tp`
  quantile of the scores of its layer (`scope='layer'`) or of every unit of the model
  (`scope='global'`; a layer's best-scoring unit always stays, so no layer is cut through).
  """
  if scope not in SCOPES:
    raise ValueError(f'structured scope {scope!r} is not one of {SCOPES}')
  by_guidance = not _off(structured_tp)
  if by_guidance and guidance is None:
    raise ValueError('structured_tp needs the guidance')
  flat = dict(traverse_util.flatten_dict(mask))
  scores = unit_scores(guidance, units) if by_guidance else None
  if by_guidance and scope == 'global':
    cut = jnp.quantile(jnp.concatenate(scores), structured_tp)
  for i, unit in enumerate(units):
    kernels = [flat[p] for p in unit.kernels]
    kept = sum(_per_unit_sum(k.astype(jnp.float32), unit.groups) for k in kernels)
    count = sum(k.size // k.shape[-1] * unit.groups for k in kernels)
    remove = 1.0 - kept / count >= structured_threshold
    if by_guidance:
      score = scores[i]
      layer_cut = jnp.quantile(score, structured_tp) if scope == 'layer' else cut
      remove = remove | ((score < layer_cut) & (score < jnp.max(score)))
    keep_u = ~remove  # [units]
    for path, k in zip(unit.kernels, kernels):
      flat[path] = k & _along(_unit_expand(keep_u, k.shape[-1]), k.ndim, k.ndim - 1)
    for path in unit.extras:
      flat[path] = flat[path] & _unit_expand(keep_u, flat[path].shape[0])
    for path, axis in unit.consumers:
      consumer = flat[path]
      keep_in = _unit_expand(keep_u, consumer.shape[axis])
      flat[path] = consumer & _along(keep_in, consumer.ndim, axis)
  return traverse_util.unflatten_dict(flat)


def hybrid_mask(guidance: PyTree, tp, units: Sequence[Unit],
                structured_threshold: float = 1.0, structured_tp=0.0,
                scope: str = 'layer') -> PyTree:
  """The AutoFLIP mask: unstructured global-`tp` pruning, then whole-unit removal."""
  mask = unstructured_mask(guidance, tp)
  return structured_mask(mask, units, structured_threshold, guidance, structured_tp, scope)


def unit_counts(mask: PyTree, units: Sequence[Unit]) -> dict[str, tuple[int, int]]:
  """{unit layer name: (kept units, total units)}: a unit is kept while any incoming weight is."""
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(mask).items()}
  alive = {unit.name: unit.alive(flat, extras=False) for unit in units}
  return {name: (int(a.sum()), a.size) for name, a in alive.items()}


def jaccard(mask_a: PyTree, mask_b: PyTree) -> float:
  """|A ∩ B| / |A ∪ B| of the kept kernel weights (leaves with ndim >= 2) of two masks; 1.0 when
  both keep none. The robustness experiments compare an attacked mask with the clean one."""
  inter = union = 0
  for a, b in zip(jax.tree.leaves(mask_a), jax.tree.leaves(mask_b)):
    if is_prunable(a):
      a, b = np.asarray(a, bool), np.asarray(b, bool)
      inter += int(np.sum(a & b))
      union += int(np.sum(a | b))
  return 1.0 if union == 0 else inter / union
