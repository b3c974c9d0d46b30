"""The algorithm interface and AutoFLIP's wiring, with hand-computed masks.

The per-round mask must come from the explorations of the round's cohort (not every client's),
and `guidance_weighted` must weight the explorers by their examples, in the round and before it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import algorithms
from autoflip_jax import setup as setup_lib
from autoflip_jax.algorithms import autoflip
from tests.helpers import tiny_config

# One 2x4 kernel; client 0 and 1 moved weight i by i (1..8, row-major), clients 2 and 3 by 9 - i.
UP = np.arange(1.0, 9.0).reshape(2, 4)
SQDEV = {'l': {'kernel': jnp.asarray(np.stack([UP, UP, 9 - UP, 9 - UP]), jnp.float32)}}
# With Tp = 0.5 the threshold is the median of the 8 min-max normalised values, between the
# 4th and 5th: an increasing pattern keeps row 1, a decreasing one row 0, a constant one nothing.
KEEP_ROW_1 = [[False] * 4, [True] * 4]
KEEP_ROW_0 = [[True] * 4, [False] * 4]
NOTHING = [[False] * 4, [False] * 4]


def _round_mask(weighted: bool):
  config = tiny_config(algorithm='autoflip', guidance_per_round=True, guidance_weighted=weighted,
                       tp=0.5)
  algorithm = algorithms.get('autoflip', config, units=())
  assert algorithm.round_mask is not None and algorithm.update is None
  return lambda ids, n: np.asarray(algorithm.round_mask(SQDEV, jnp.asarray(ids),
                                                        jnp.asarray(n))['l']['kernel'])


def test_per_round_mask_comes_from_the_cohort():
  mask = _round_mask(weighted=False)
  np.testing.assert_array_equal(mask([0, 1], [5, 5]), KEEP_ROW_1)
  np.testing.assert_array_equal(mask([2, 3], [5, 5]), KEEP_ROW_0)
  # All four clients would average to a constant: every weight tied and pruned.
  np.testing.assert_array_equal(mask([0, 2], [5, 5]), NOTHING)


def test_per_round_mask_weights_explorers_by_examples_when_asked():
  # Cohort {0, 2} with 3 and 1 examples: weighted mean 0.75 i + 0.25 (9 - i) = 0.5 i + 2.25
  # increases with i; with 1 and 3 it decreases; unweighted it is the constant 4.5.
  weighted = _round_mask(weighted=True)
  np.testing.assert_array_equal(weighted([0, 2], [3, 1]), KEEP_ROW_1)
  np.testing.assert_array_equal(weighted([0, 2], [1, 3]), KEEP_ROW_0)
  np.testing.assert_array_equal(_round_mask(weighted=False)([0, 2], [3, 1]), NOTHING)


def test_exploration_guidance_is_weighted_when_asked():
  """Before round 1 too: unequal clients (Dirichlet split) give a different first mask."""
  base = dict(algorithm='autoflip', num_clients=4, **{'data.partition': 'dirichlet',
                                                      'data.alpha': 0.3})
  kept = {}
  for weighted in (False, True):
    config = tiny_config(guidance_weighted=weighted, **base)
    setup = setup_lib.resolve(config)
    assert len(set(setup.dataset.client_sizes.tolist())) > 1  # the weights differ
    params0 = setup.params0(config.seed)
    start, = autoflip.init(setup.context(config.seed), params0,
                           jax.random.fold_in(jax.random.key(config.seed), 2), (config.tp,))
    kept[weighted] = jax.tree.map(np.asarray, start.mask)
  differs = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(kept[False]),
                                                       jax.tree.leaves(kept[True]))]
  assert any(differs)


def test_registry_names_every_algorithm_once():
  assert algorithms.ALGORITHMS == ('autoflip', 'fedavg', 'prunefl', 'eflprune', 'random',
                                   'magnitude')
  config = tiny_config()
  for name in algorithms.ALGORITHMS:
    assert algorithms.get(name, config, units=()).name == name
  with pytest.raises(ValueError, match="config.algorithm='fedavg,fedprox'"):
    algorithms.parse('fedavg,fedprox')
