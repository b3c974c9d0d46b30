"""One seed's exploration and the server's side of it, as an `autoflip` run does them, without
the run: what `experiments.robustness` and `experiments.unit_activity` score masks on."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from autoflip_jax.algorithms import autoflip
from experiments import overrides as overrides_lib


def configure(base, overrides: dict):
  return overrides_lib.apply(base, {'algorithm': 'autoflip', **overrides})


class Exploration(NamedTuple):
  """One training seed's clean exploration, as the runner's `autoflip.init` runs it."""
  seed: int
  sqdev: Any
  num_examples: Any
  rng: Any


def explore(base, setup, seed: int, params=None) -> Exploration:
  """The seed's explorers from `params` (default: the seed's θ0)."""
  params = setup.params0(seed) if params is None else params
  ids = autoflip.explorer_ids(base.num_clients, base.c_exp, seed)
  fn = autoflip.explore_fn(base, setup.apply_fn, setup.clients_per_chunk)
  data, num_examples = setup.pack(ids)
  rng = jax.random.fold_in(jax.random.key(seed), 2)  # the runner's init key (train.start_run)
  return Exploration(seed, fn(params, data, jnp.asarray(ids), rng).sqdev, num_examples, rng)


def guidance_and_outliers(config, e: Exploration):
  """The server's guidance from the explorers' reports (attack, clip, noise, aggregation), and
  `filtered_mean`'s flags over the explorers (else None), as the runner's `autoflip.init`."""
  weights = e.num_examples if config.guidance_weighted else None
  reports = autoflip.server_reports(config, e.sqdev, e.rng, e.seed)
  outlier = autoflip.explorer_outliers(config, reports)
  return autoflip.server_guidance(config, reports, weights, e.rng, outlier), outlier


def mask_and_outliers(config, setup, e: Exploration):
  """The point's mask, and `filtered_mean`'s flags over the explorers (else None), computed
  once for both, as the runner's `autoflip.init` does."""
  guidance, outlier = guidance_and_outliers(config, e)
  mask = jax.jit(autoflip.mask_from_guidance(config, setup.units, config.tp))(guidance)
  return mask, outlier


def mask_of(config, setup, e: Exploration):
  return mask_and_outliers(config, setup, e)[0]
