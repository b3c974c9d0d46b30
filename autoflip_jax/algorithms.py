"""Algorithms on the one round engine: what each does before round 1 and to its mask.

* `fedavg`: the dense model, the all-True mask (McMahan et al. 2017).
* `autoflip`: federated loss exploration on a `c_exp` fraction of the clients, the guidance
  matrix, then the hybrid mask from `tp` (AUTOFLIP.md §1-2). With `guidance_per_round` (needs
  `c_exp = 1`, as in the reference code) the mask is rebuilt every round, inside the jitted round,
  from the explorations of that round's sampled clients.
* `prunefl`, `eflprune`, `random`, `magnitude`: the paper's comparison methods and our controls,
  in `baselines/` (see its docstring and docs/baselines.md).

Each algorithm has two parts:
* `hooks(name, config, units, params0) -> Hooks`: what the engine calls during training, built
  without data so a resumed run gets them too: an in-round `mask_fn`, a host-side `update` after
  each round (a new mask every so often), whether the round must report squared gradients, and
  the shapes of the arrays the algorithm keeps (`aux_like`, `extra_like`, saved in checkpoints).
* `init(name, params0, ...) -> AlgorithmInit`: the work before round 1 (exploration, initial
  pruning): the first mask, the arrays above, and its cost (bytes, seconds, statistics).
  `previous` holds the summary rows of the algorithms already run in this invocation (the
  controls read AutoFLIP's `kernel_kept` there).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, exploration, federated, masks

PyTree = Any
ALGORITHMS = ('autoflip', 'fedavg', 'prunefl', 'eflprune', 'random', 'magnitude')


class Hooks(NamedTuple):
  mask_fn: Callable | None = None  # (client_ids, num_examples, aux) -> mask, inside the round
  update: Callable | None = None   # (round, state, RoundMetrics, extra) -> (mask or None, extra)
  track_grad_sq: bool = False      # the round returns the cohort's summed squared gradients
  aux_like: PyTree = None          # shapes of `aux` (read-only device arrays for mask_fn)
  extra_like: PyTree = None        # shapes of `extra` (the algorithm's own state between rounds)


class AlgorithmInit(NamedTuple):
  mask: PyTree
  aux: PyTree = None
  extra: PyTree = None
  bytes_up: int = 0
  bytes_down: int = 0
  seconds: float = 0.0
  info: dict | None = None


def parse(algorithm: str) -> tuple[str, ...]:
  names = tuple(a.strip() for a in algorithm.split(',') if a.strip())
  unknown = [a for a in names if a not in ALGORITHMS]
  if not names or unknown:
    raise ValueError(f'config.algorithm={algorithm!r}: each comma-separated name must be one of '
                     f'{ALGORITHMS}')
  return names


def explorer_ids(num_clients: int, c_exp: float, seed: int) -> np.ndarray:
  """The explorer clients: round(c_exp * K) of them (at least 1), fixed by the seed."""
  count = max(1, int(round(c_exp * num_clients)))
  rng = np.random.default_rng([seed, 2])
  return np.sort(rng.choice(num_clients, size=count, replace=False))


def init_fedavg(params0: PyTree, **_) -> AlgorithmInit:
  return AlgorithmInit(masks.ones_mask(params0))


def init_autoflip(params0: PyTree, *, config, apply_fn, units, pack: Callable,
                  rng: jax.Array) -> AlgorithmInit:
  """Exploration (one compiled program over all explorers) and the hybrid mask.

  `pack(ids) -> (ClientData, num_examples)` gives the padded device arrays of those clients.
  """
  return init_autoflip_sweep(params0, (config.tp,), config=config, apply_fn=apply_fn,
                             units=units, pack=pack, rng=rng)[0]


def init_autoflip_sweep(params0: PyTree, tps: Sequence[float], *, config, apply_fn, units,
                        pack: Callable, rng: jax.Array) -> list[AlgorithmInit]:
  """One exploration and one hybrid mask per threshold of `tps` (the Tp sweep, `tp_sweep.py`).

  The exploration does not depend on Tp, so element i is exactly `init_autoflip` with
  `config.tp = tps[i]`; each element reports the whole exploration's bytes and seconds.
  """
  ids = explorer_ids(config.num_clients, config.c_exp, config.seed)
  explore = exploration.make_explore_fn(
      apply_fn, optimizer=config.optimizer, learning_rate=config.learning_rate,
      epochs=config.e_exp, patience=config.patience,
      trajectory=config.exploration_trajectory,
      clients_per_chunk=federated.chunk_for(config))
  start = time.time()
  data, num_examples = pack(ids)
  result = explore(params0, data, jnp.asarray(ids), rng)
  jax.block_until_ready(result.sqdev)
  seconds = time.time() - start
  weights = num_examples if config.guidance_weighted else None
  guidance = exploration.guidance(result.sqdev, weights, config.guidance_normalization)
  total = accounting.total_params(params0)
  up, down = accounting.exploration_bytes(total, len(ids))
  # With per-round guidance the round needs every client's exploration (explorers == all
  # clients, in client-id order).
  aux = result.sqdev if config.guidance_per_round else None
  inits = []
  for tp in tps:
    mask = jax.jit(_mask_from_guidance(config, units, tp))(guidance)
    info = {
        # Kept kernel weights (ndim >= 2): the controls' target, read from the summary row.
        'kernel_kept': int(sum(int(jnp.sum(m)) for m in jax.tree.leaves(mask)
                               if masks.is_prunable(m))),
        'explorers': int(len(ids)),
        'exploration_epochs_mean': float(jnp.mean(result.epochs_run)),
        'exploration_final_loss_mean': float(jnp.mean(result.final_loss)),
    }
    inits.append(AlgorithmInit(mask, aux, None, up, down, seconds, info))
  return inits


def _mask_from_guidance(config, units, tp: float | None = None) -> Callable:
  """`guidance -> hybrid mask` at threshold `tp` (None: config.tp)."""
  return functools.partial(
      masks.hybrid_mask, tp=config.tp if tp is None else tp, units=units,
      structured_threshold=config.structured_threshold, structured_tp=config.structured_tp)


def _autoflip_round_mask_fn(config, units) -> Callable:
  """The in-round mask rebuild `(client_ids, num_examples, sqdev_all) -> mask`."""
  make_mask = _mask_from_guidance(config, units)

  def mask_fn(client_ids, n, sqdev_all):
    sqdev = jax.tree.map(lambda d: d[client_ids], sqdev_all)
    w = n if config.guidance_weighted else None
    return make_mask(exploration.guidance(sqdev, w, config.guidance_normalization))
  return mask_fn


def hooks(name: str, config, units, params0: PyTree) -> Hooks:
  """The algorithm's training-time hooks (see the module docstring)."""
  if name == 'autoflip' and config.guidance_per_round:
    aux_like = jax.tree.map(
        lambda p: jax.ShapeDtypeStruct((config.num_clients,) + p.shape, p.dtype), params0)
    return Hooks(mask_fn=_autoflip_round_mask_fn(config, units), aux_like=aux_like)
  if name in ('autoflip', 'fedavg'):
    return Hooks()
  from autoflip_jax import baselines  # here, not at the top: baselines import this module
  return baselines.hooks(name, config, units, params0)


def init(name: str, params0: PyTree, *, previous: dict | None = None, **kwargs) -> AlgorithmInit:
  """The algorithm's work before round 1; `previous`: {name: summary row} of earlier runs."""
  if name in ('autoflip', 'fedavg'):
    return {'fedavg': init_fedavg, 'autoflip': init_autoflip}[name](params0, **kwargs)
  from autoflip_jax import baselines  # here, not at the top: baselines import this module
  return baselines.init(name, params0, previous=previous or {}, **kwargs)
