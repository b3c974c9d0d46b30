"""EFLPrune: server-side structured pruning of whole units by the L1 norm of their weights.

Identification (uncertain). The AutoFLIP paper (arXiv 2405.10271) compares against "EFLPrune";
we could not retrieve the paper's reference list or experimental section to see which work that
name cites, and its reference code has no EFLPrune. Our best match is T. Wu, C. Song, P. Zeng,
"Efficient federated learning on resource-constrained edge devices based on model pruning",
Complex & Intelligent Systems 9:6999-7013, 2023 (doi:10.1007/s40747-023-01120-5): "efficient
federated learning" + "prune", a federated pruning method of 2023 that reduces client computation
and both communication directions, as the AutoFLIP comparison measures. We could read only its abstract: before each release of the global model the
server "dynamically selects neurons or convolution kernels", pruning "a current optimal subnet"
that the clients train; the aggregation "maintains the complete model structure through model
reconstruction and parameter reuse", so pruned units keep their parameters on the server and can
be selected again. Its importance criterion and pruning rates are not in the abstract.

What we implement, and why:
  * Units are those the model declares (`Model.units()`: conv filters, dense neurons, LSTM units;
    never the classifier's outputs). A unit's importance is the L1 norm of its incoming weights
    (all its producer-kernel slices) in the current global model: the standard filter criterion
    (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), since the paper's own is
    unknown to us.
  * Selection: each layer keeps its U - floor(share * U) most important units (at least one;
    ties to the lower unit index); a removed unit loses its incoming slices, its bias and other
    per-unit parameters and its input slice in every consumer (`masks.structured_mask`), so the
    subnet is a smaller dense model.
  * Schedule: a selection before round 1 (from θ0) and after every `eflprune_interval`-th round,
    the pruned share growing linearly, share_s = eflprune_rate * min(1, s / eflprune_steps) at
    the s-th selection, then fixed. Wu et al. select before every release with parameter reuse;
    our engine zeroes pruned parameters and an algorithm's hook can only change the mask, so a
    unit that came back would restart from all-zero weights, a point where a ReLU unit receives
    no gradient (a dead unit). So a pruned unit stays pruned, and selection is made among the
    units kept so far; selecting progressively lets the later choices use the trained model.
    With eflprune_steps = 1 this is one-shot structured L1 pruning of θ0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from autoflip_jax import masks
from autoflip_jax.algorithms.base import Algorithm, Start
from autoflip_jax.fields import check_float, check_int
from autoflip_jax.models.units import Unit

PyTree = Any


def check_config(config, names) -> None:
  del names
  check_float(config, 'eflprune_rate', 0.0, 1.0, False, True)
  check_int(config, 'eflprune_interval', 1)
  check_int(config, 'eflprune_steps', 1)


def pruned_share(config, selection: int) -> float:
  """The share of each layer's units pruned after the `selection`-th selection (1-based)."""
  return config.eflprune_rate * min(1.0, selection / config.eflprune_steps)


def _per_unit(x: np.ndarray, groups: int) -> np.ndarray:
  """Sums a producer kernel over every axis but the unit one: `[units]` (fused gates grouped)."""
  return x.reshape(-1, groups, x.shape[-1] // groups).sum(axis=(0, 1))


def unit_scores(params: PyTree, units: Sequence[Unit]) -> dict[str, np.ndarray]:
  """{layer: L1 norm of each unit's incoming weights}."""
  flat = traverse_util.flatten_dict(params)
  return {u.name: sum(_per_unit(np.abs(np.asarray(flat[k], np.float64)), u.groups)
                      for k in u.kernels) for u in units}


def select(params: PyTree, mask: PyTree, units: Sequence[Unit], share: float) -> PyTree:
  """Keeps each layer's U - floor(share U) highest-scoring live units (module docstring)."""
  scores = unit_scores(params, units)
  flat = {k: np.array(v, bool) for k, v in traverse_util.flatten_dict(mask).items()}
  for unit in units:
    score = scores[unit.name]
    count = len(score)
    alive = sum(_per_unit(flat[k], unit.groups) for k in unit.kernels) > 0
    keep_count = max(1, count - math.floor(share * count))
    order = np.argsort(-np.where(alive, score, -1.0), kind='stable')
    keep = np.zeros(count, bool)
    keep[order[:keep_count]] = True
    keep &= alive
    for k in unit.kernels:
      flat[k] &= np.tile(keep, flat[k].shape[-1] // count)
  cut = jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat))
  return masks.structured_mask(cut, units, structured_threshold=1.0)


def init(context, params0: PyTree, rng, tps) -> list[Start]:
  """The first selection, from θ0."""
  del rng, tps
  share = pruned_share(context.config, 1)
  mask = select(params0, masks.ones_mask(params0), context.units, share)
  return [Start(mask, info={'first_unit_share_pruned': share})]


def make(config, units) -> Algorithm:
  """The s-th selection after round (s - 1) * eflprune_interval, while the share still grows."""
  def update(round_num, params, mask, metrics, state):
    del metrics
    selection = round_num // config.eflprune_interval + 1
    if (round_num % config.eflprune_interval or round_num >= config.num_rounds
        or selection > config.eflprune_steps):
      return None, state
    return select(params, mask, units, pruned_share(config, selection)), state

  return Algorithm('eflprune', init, update=update)
