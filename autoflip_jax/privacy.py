"""Privacy accounting of the two Gaussian mechanisms, with Google's `dp-accounting` (RDP).

* Private exploration (`exploration_epsilon`): every explorer's report is clipped to L2 norm
  C (`dp.exploration_clip`) and the server releases the SUM of the clipped reports plus
  N(0, (z C)²) noise (`dp.exploration_noise` = z) once. Adding or removing one client changes
  the sum by at most C, so this is one Gaussian mechanism of noise multiplier z:
  `GaussianDpEvent(z)`, composed once. With `guidance_per_round` every client's report is noised
  on its own (std z C) once and reused in every round (post-processing), still one event.
* Private training (`training_epsilon`, DP-FedAvg, McMahan et al. 2018): each round the sum of
  the cohort's clipped updates gets N(0, (z C)²) noise; a round samples a fraction
  q = clients_per_round / num_clients of the clients, so a round is
  `PoissonSampledDpEvent(q, GaussianDpEvent(z))` and `rounds` of them compose. Deviation: our
  cohorts are drawn without replacement at a fixed size (`schedule.sample_clients`), the
  accountant assumes Poisson sampling at the same rate (the usual approximation, as in McMahan
  et al.'s own accounting).

ε is at `delta` (`dp.delta`), client-level (one client's whole data is the unit of privacy).
The accountant gets explicit RDP orders from 1.5 up: the default orders below 1.5 make
dp-accounting's fractional-order series for the sampled Gaussian fail to converge and log an
absl WARNING per order; they never give the smallest ε at the noise levels used here.
"""

from __future__ import annotations

import functools
import logging

import dp_accounting
from dp_accounting import rdp

ORDERS = (1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0,
          16.0, 20.0, 24.0, 28.0, 32.0, 48.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


class _NoConvergenceWarnings(logging.Filter):
  """Drops dp-accounting's 'failed to converge ... Excluding this order' lines (the order is
  then skipped, which only makes ε the minimum over the remaining orders)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'failed to converge' not in record.getMessage()


def _accountant() -> rdp.RdpAccountant:
  return rdp.RdpAccountant(orders=list(ORDERS))


def _epsilon(event, count: int, delta: float) -> float:
  absl_logger = logging.getLogger('absl')
  quiet = _NoConvergenceWarnings()
  absl_logger.addFilter(quiet)
  try:
    accountant = _accountant()
    accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))
  finally:
    absl_logger.removeFilter(quiet)


@functools.lru_cache(maxsize=None)
def exploration_epsilon(noise: float, delta: float) -> float:
  """ε at `delta` of one Gaussian release of noise multiplier `noise` (sensitivity = the clip)."""
  if noise <= 0:
    return float('inf')
  return _epsilon(dp_accounting.GaussianDpEvent(noise), 1, delta)


@functools.lru_cache(maxsize=None)
def training_epsilon(noise: float, sampling_rate: float, rounds: int, delta: float) -> float:
  """ε at `delta` after `rounds` DP-FedAvg rounds (Poisson-sampled Gaussian, rate q)."""
  if rounds <= 0:
    return 0.0
  if noise <= 0:
    return float('inf')
  event = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise))
  return _epsilon(event, rounds, delta)
