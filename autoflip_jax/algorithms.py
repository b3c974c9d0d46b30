"""Algorithms on the one round engine: what each does before round 1 and to its mask.

* `fedavg`: the dense model, the all-True mask (McMahan et al. 2017).
* `autoflip`: federated loss exploration on a `c_exp` fraction of the clients, the guidance
  matrix, then the hybrid mask from `tp` (AUTOFLIP.md §1-2). With `guidance_per_round` (needs
  `c_exp = 1`, as in the reference code) the mask is rebuilt every round, inside the jitted round,
  from the explorations of that round's sampled clients.

`init(...)` returns an `AlgorithmInit`: the first mask, an optional `mask_fn` and its device-side
data for the round, and the cost of what it did (bytes, seconds, exploration statistics).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, exploration, masks

PyTree = Any
ALGORITHMS = ('autoflip', 'fedavg')


class AlgorithmInit(NamedTuple):
  mask: PyTree
  mask_fn: Callable | None = None  # (client_ids, num_examples, aux) -> mask, inside the round
  aux: PyTree = None               # device arrays mask_fn reads
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
  ids = explorer_ids(config.num_clients, config.c_exp, config.seed)
  explore = exploration.make_explore_fn(
      apply_fn, optimizer=config.optimizer, learning_rate=config.learning_rate,
      epochs=config.e_exp, patience=config.patience,
      trajectory=config.exploration_trajectory)
  start = time.time()
  data, num_examples = pack(ids)
  result = explore(params0, data, jnp.asarray(ids), rng)
  jax.block_until_ready(result.sqdev)
  seconds = time.time() - start
  weights = num_examples if config.guidance_weighted else None
  guidance = exploration.guidance(result.sqdev, weights, config.guidance_normalization)
  mask = jax.jit(_mask_from_guidance(config, units))(guidance)
  total = accounting.total_params(params0)
  up, down = accounting.exploration_bytes(total, len(ids))
  info = {
      'explorers': int(len(ids)),
      'exploration_epochs_mean': float(jnp.mean(result.epochs_run)),
      'exploration_final_loss_mean': float(jnp.mean(result.final_loss)),
  }
  # With per-round guidance the round needs every client's exploration (explorers == all
  # clients, in client-id order).
  aux = result.sqdev if config.guidance_per_round else None
  mask_fn = round_mask_fn('autoflip', config, units)
  return AlgorithmInit(mask, mask_fn, aux, up, down, seconds, info)


def _mask_from_guidance(config, units) -> Callable:
  return functools.partial(
      masks.hybrid_mask, tp=config.tp, units=units,
      structured_threshold=config.structured_threshold, structured_tp=config.structured_tp)


def round_mask_fn(name: str, config, units) -> Callable | None:
  """The in-round mask rebuild `(client_ids, num_examples, sqdev_all) -> mask`, or None."""
  if name != 'autoflip' or not config.guidance_per_round:
    return None
  make_mask = _mask_from_guidance(config, units)

  def mask_fn(client_ids, n, sqdev_all):
    sqdev = jax.tree.map(lambda d: d[client_ids], sqdev_all)
    w = n if config.guidance_weighted else None
    return make_mask(exploration.guidance(sqdev, w, config.guidance_normalization))
  return mask_fn


def init(name: str, params0: PyTree, **kwargs) -> AlgorithmInit:
  return {'fedavg': init_fedavg, 'autoflip': init_autoflip}[name](params0, **kwargs)
