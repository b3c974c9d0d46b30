"""Tests for autoflip_jax.schedule: a round's cohort, learning rate and evaluation, by hand."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from autoflip_jax import schedule


def _cohorts(seed, rounds, num_clients=20, per_round=5):
  return [tuple(schedule.sample_clients(seed, r, num_clients, per_round).tolist()) for r in rounds]


def test_sample_clients_is_a_sorted_subset_of_the_right_size():
  """Every cohort: `per_round` distinct ids in [0, num_clients), ascending."""
  for seed in (0, 7):
    for r in range(1, 11):
      ids = schedule.sample_clients(seed, r, 20, 5)
      assert ids.shape == (5,)
      assert np.issubdtype(ids.dtype, np.integer)
      assert np.all(np.diff(ids) > 0), ids  # sorted and unique
      assert ids.min() >= 0 and ids.max() < 20, ids
  # The whole population: every id exactly once.
  np.testing.assert_array_equal(schedule.sample_clients(3, 4, 6, 6), np.arange(6))


def test_sample_clients_changes_with_the_round():
  """A new cohort every round: over 10 rounds (C(20, 5) = 15504 possible cohorts) the cohorts are
  all distinct, and over 40 rounds every client takes part."""
  cohorts = _cohorts(0, range(1, 11))
  assert len(set(cohorts)) == 10, cohorts
  seen = set()
  for c in _cohorts(0, range(1, 41)):
    seen.update(c)
  assert seen == set(range(20))


def test_sample_clients_is_fixed_by_seed_and_round():
  """The same (seed, round) gives the same cohort (a resumed run repeats the original), whatever
  was drawn before; another seed gives other cohorts."""
  first = _cohorts(1, [5, 2, 9])
  schedule.sample_clients(1, 3, 20, 5)  # no hidden state between calls
  assert _cohorts(1, [5, 2, 9]) == first
  a, b = _cohorts(1, range(1, 11)), _cohorts(2, range(1, 11))
  assert sum(x != y for x, y in zip(a, b)) >= 9, (a, b)


def test_round_learning_rate_hand_values():
  """learning_rate * lr_decay ** (round - 1), rounds counted from 1: round 1 is the base rate."""
  config = ml_collections.ConfigDict({'learning_rate': 0.1, 'lr_decay': 0.5})
  assert schedule.round_learning_rate(config, 1) == 0.1
  assert schedule.round_learning_rate(config, 2) == 0.05
  assert schedule.round_learning_rate(config, 3) == 0.025     # 0.1 * 0.5 ** 2
  assert schedule.round_learning_rate(config, 5) == 0.00625   # 0.1 * 0.5 ** 4
  config = ml_collections.ConfigDict({'learning_rate': 0.02, 'lr_decay': 0.9})
  assert schedule.round_learning_rate(config, 1) == 0.02
  assert schedule.round_learning_rate(config, 3) == pytest.approx(0.0162, rel=1e-12)  # .02 * .81
  config = ml_collections.ConfigDict({'learning_rate': 0.3, 'lr_decay': 1.0})
  assert [schedule.round_learning_rate(config, r) for r in (1, 2, 50)] == [0.3, 0.3, 0.3]


def test_eval_due_every_k_rounds_and_the_last():
  """Evaluated after rounds that are multiples of `eval_every`, and always after the last."""
  config = ml_collections.ConfigDict({'eval_every': 3, 'num_rounds': 10})
  assert [r for r in range(1, 11) if schedule.eval_due(config, r)] == [3, 6, 9, 10]
  config = ml_collections.ConfigDict({'eval_every': 1, 'num_rounds': 4})
  assert [r for r in range(1, 5) if schedule.eval_due(config, r)] == [1, 2, 3, 4]
  config = ml_collections.ConfigDict({'eval_every': 5, 'num_rounds': 10})
  assert [r for r in range(1, 11) if schedule.eval_due(config, r)] == [5, 10]
