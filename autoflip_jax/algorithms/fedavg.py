"""FedAvg (McMahan et al. 2017): the dense model, the all-True mask, nothing before round 1."""

from __future__ import annotations

from autoflip_jax import masks
from autoflip_jax.algorithms.base import Algorithm, Start


def init(context, params0, rng, tps) -> list[Start]:
  del context, rng, tps
  return [Start(masks.ones_mask(params0))]


def make(config, units) -> Algorithm:
  del config, units
  return Algorithm('fedavg', init)
