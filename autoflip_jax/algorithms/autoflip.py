"""AutoFLIP (arXiv 2405.10271 v3): federated loss exploration, guidance, the hybrid mask.

Before round 1 (`init`; AUTOFLIP.md §1-2): a `c_exp` fraction of the clients (`explorer_ids`,
fixed by the seed) each train θ0 for up to `e_exp` epochs, all in one compiled program
(`exploration.make_explore_fn`), and report (θk − θ0)²; the server's guidance matrix
G = normalise(mean_k (θk − θ0)²) is binarised with Tp into the hybrid mask
(`masks.hybrid_mask`: the global Tp quantile over kernel weights, then whole units). The
exploration does not depend on Tp, so a Tp sweep explores once and builds one mask per
threshold.

With `guidance_per_round` (needs `c_exp = 1`, as in the reference code) the algorithm's state
is every client's exploration, and each round's mask is rebuilt on the device, inside the
jitted round, from the explorations of that round's cohort (`round_mask`).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, exploration, masks
from autoflip_jax.fields import check_choice, check_float, check_int
from autoflip_jax.algorithms.base import Algorithm, Start


def check_config(config, names) -> None:
  """AutoFLIP's fields (always: a bad value is wrong in any run); its rules when it runs."""
  check_float(config, 'tp', 0.0, 1.0, False, True)
  check_int(config, 'e_exp', 0)
  check_float(config, 'c_exp', 0.0, 1.0, True, False)
  check_int(config, 'patience', 0)
  check_choice(config, 'guidance_normalization', ('minmax', 'robust'))
  check_float(config, 'structured_threshold', 0.0, 1.0, True, False)
  check_float(config, 'structured_tp', 0.0, 1.0, False, True)
  if 'autoflip' in names and config.e_exp < 1:
    raise ValueError('config.e_exp=0 with algorithm autoflip: exploration needs at least one '
                     'epoch (with none, every guidance value is 0, all tie at the threshold and '
                     'the tie rule prunes every weight)')
  if config.guidance_per_round and config.c_exp != 1.0:
    raise ValueError(f'config.guidance_per_round=True needs config.c_exp=1.0 (every client must '
                     f'have explored), got c_exp={config.c_exp}')


def explorer_ids(num_clients: int, c_exp: float, seed: int) -> np.ndarray:
  """The explorer clients: round(c_exp * K) of them (at least 1), fixed by the seed."""
  count = max(1, int(round(c_exp * num_clients)))
  rng = np.random.default_rng([seed, 2])
  return np.sort(rng.choice(num_clients, size=count, replace=False))


def mask_from_guidance(config, units, tp: float):
  """`guidance -> hybrid mask` at threshold `tp` with the config's structured rule."""
  return functools.partial(
      masks.hybrid_mask, tp=tp, units=units, structured_threshold=config.structured_threshold,
      structured_tp=config.structured_tp)


def kernel_kept(mask) -> int:
  """Kept kernel weights (leaves with ndim >= 2): the controls' target count."""
  return int(sum(int(jnp.sum(m)) for m in jax.tree.leaves(mask) if masks.is_prunable(m)))


def init(context, params0, rng, tps) -> list[Start]:
  """Exploration (one compiled program over all explorers), then one hybrid mask per Tp.

  Every element reports the whole exploration's bytes and seconds, as its own run would.
  """
  config = context.config
  ids = explorer_ids(config.num_clients, config.c_exp, context.seed)
  explore = exploration.make_explore_fn(
      context.apply_fn, optimizer=config.optimizer, learning_rate=config.learning_rate,
      epochs=config.e_exp, patience=config.patience, trajectory=config.exploration_trajectory,
      clients_per_chunk=context.clients_per_chunk)
  start = time.time()
  data, num_examples = context.pack(ids)
  result = explore(params0, data, jnp.asarray(ids), rng)
  jax.block_until_ready(result.sqdev)
  seconds = time.time() - start
  weights = num_examples if config.guidance_weighted else None
  guidance = exploration.guidance(result.sqdev, weights, config.guidance_normalization)
  up, down = accounting.exploration_bytes(accounting.total_params(params0), len(ids))
  # Per-round guidance needs every client's exploration (explorers == all clients, id order).
  state = result.sqdev if config.guidance_per_round else None
  starts = []
  for tp in tps:
    mask = jax.jit(mask_from_guidance(config, context.units, tp))(guidance)
    info = {'kernel_kept': kernel_kept(mask), 'explorers': int(len(ids)),
            'exploration_epochs_mean': float(jnp.mean(result.epochs_run)),
            'exploration_final_loss_mean': float(jnp.mean(result.final_loss))}
    starts.append(Start(mask, state, up, down, seconds, info))
  return starts


def make(config, units) -> Algorithm:
  """AutoFLIP for this config: a fixed mask, or with `guidance_per_round` one per round."""
  if not config.guidance_per_round:
    return Algorithm('autoflip', init, sweeps_tp=True)
  make_mask = mask_from_guidance(config, units, config.tp)

  def round_mask(sqdev_all, client_ids, num_examples):
    sqdev = jax.tree.map(lambda d: d[client_ids], sqdev_all)
    weights = num_examples if config.guidance_weighted else None
    return make_mask(exploration.guidance(sqdev, weights, config.guidance_normalization))

  def state_like(context, params0):
    return jax.tree.map(
        lambda p: jax.ShapeDtypeStruct((config.num_clients,) + p.shape, p.dtype), params0)

  return Algorithm('autoflip', init, state_like=state_like, round_mask=round_mask,
                   sweeps_tp=True)
