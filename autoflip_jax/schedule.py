"""What a round's number decides, on the host: its cohort, its learning rate, whether to evaluate.

Each is a function of (seed, round) and the config alone, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import numpy as np


def sample_clients(seed: int, round_num: int, num_clients: int, per_round: int) -> np.ndarray:
  """The cohort of a round: sorted ids, fixed by (seed, round), the same for every algorithm."""
  rng = np.random.default_rng([seed, 1, round_num])
  return np.sort(rng.choice(num_clients, size=per_round, replace=False))


def round_learning_rate(config, round_num: int) -> float:
  """The learning rate of round `round_num` (1-based): learning_rate * lr_decay**(round - 1)."""
  return config.learning_rate * config.lr_decay ** (round_num - 1)


def eval_due(config, round_num: int) -> bool:
  """Whether the test set is evaluated after this round (else the last figures are repeated)."""
  return round_num % config.eval_every == 0 or round_num == config.num_rounds
