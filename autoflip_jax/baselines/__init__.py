"""The paper's comparison methods and our controls, on the same round engine (AUTOFLIP.md §6).

* `prunefl` (`prunefl.py`): Jiang et al., "Model Pruning Enables Efficient Federated Learning on
  Edge Devices", IEEE TNNLS 2022. Initial pruning on one client's small sample, then adaptive
  unstructured pruning every `prunefl_interval` rounds: the kept set that maximises accumulated
  squared gradients per second of estimated round time.
* `eflprune` (`eflprune.py`): named in the AutoFLIP paper; our best-match identification is Wu,
  Song and Zeng, "Efficient federated learning on resource-constrained edge devices based on model
  pruning", Complex & Intelligent Systems 2023 (unconfirmed; see that module and docs/baselines.md).
  Server-side structured pruning of whole units by the L1 norm of their weights.
* `random`, `magnitude` (`controls.py`): a random and a global-magnitude mask over θ0's kernels
  with exactly AutoFLIP's number of kept kernel weights (or `control_sparsity`).

Each module has `hooks(config, units, params0) -> algorithms.Hooks` and
`init(params0, *, config, apply_fn, units, pack, rng, previous) -> algorithms.AlgorithmInit`,
the two halves of the interface described in `algorithms.py`.
"""

from __future__ import annotations

from typing import Any

from autoflip_jax import algorithms
from autoflip_jax.baselines import controls, eflprune, prunefl

PyTree = Any
BASELINES = ('prunefl', 'eflprune', 'random', 'magnitude')

_INIT = {'prunefl': prunefl.init, 'eflprune': eflprune.init, 'random': controls.init_random,
         'magnitude': controls.init_magnitude}
_HOOKS = {'prunefl': prunefl.hooks, 'eflprune': eflprune.hooks}


def hooks(name: str, config, units, params0: PyTree) -> algorithms.Hooks:
  """The baseline's training-time hooks; the controls' masks are fixed (no hooks)."""
  if name in _HOOKS:
    return _HOOKS[name](config, units, params0)
  return algorithms.Hooks()


def init(name: str, params0: PyTree, **kwargs) -> algorithms.AlgorithmInit:
  """The baseline's work before round 1 (see each module)."""
  return _INIT[name](params0, **kwargs)
