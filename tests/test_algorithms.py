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


def _guided_cnn():
  """The tiny CNN, its units, kernel positions and a random guidance matrix."""
  from autoflip_jax import accounting, masks, models  # noqa: PLC0415
  config = tiny_config()
  model = models.get_model(config, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  guidance = masks.normalize(jax.tree.map(
      lambda p: jax.random.uniform(jax.random.key(p.size), p.shape), params))
  positions = accounting.kernel_positions(model.apply, params, (28, 28, 1))
  return model.units(), params, guidance, positions


@pytest.mark.parametrize('overrides', [
    {'target_compression': 2.0}, {'target_flops': 0.5},
    {'target_flops': 0.5, 'structured_rule': 'share', 'structured_threshold': 0.5}])
def test_tp_chosen_by_a_target_is_the_smallest_that_reaches_it(overrides):
  from autoflip_jax import accounting  # noqa: PLC0415
  units, params, guidance, positions = _guided_cnn()
  config = tiny_config(**overrides)
  tp, reached = autoflip.choose_tp(guidance, params, config=config, units=units,
                                   positions=positions)

  def figure(t):
    mask = autoflip.mask_from_guidance(config, units, t)(guidance)
    if 'target_compression' in overrides:
      return accounting.total_params(params) / accounting.kept_params(mask)
    return (accounting.flops_per_example(params, mask, positions, 'structured')
            / accounting.flops_per_example(params, None, positions, 'dense'))

  target = overrides.get('target_compression', overrides.get('target_flops'))
  ok = (lambda v: v >= target) if 'target_compression' in overrides else (lambda v: v <= target)
  assert 0 < tp < autoflip.TP_MAX
  assert ok(figure(tp)) and figure(tp) == pytest.approx(reached)
  assert not ok(figure(tp - 1e-4))  # a smaller Tp misses the target


def test_unreachable_target_names_the_reachable_range():
  units, params, guidance, positions = _guided_cnn()
  config = tiny_config(target_compression=5000.0)  # biases and the classes always stay
  with pytest.raises(ValueError, match=r'config.target_compression=5000.0 cannot be reached: '
                                       r'Tp in \[0, 0.999\] gives compression from 1x to '
                                       r'[\d.]+x'):
    autoflip.choose_tp(guidance, params, config=config, units=units, positions=positions)


@pytest.mark.parametrize('overrides, message', [
    ({'target_compression': 0.5}, 'config.target_compression=0.5 is below 1x'),
    ({'target_flops': 1.5}, 'config.target_flops=1.5 must be a number in [0.0, 1.0]'),
    ({'target_compression': 2.0, 'target_flops': 0.5}, 'are both set'),
    ({'target_compression': 2.0, 'tp_sweep': '0.1,0.2'},
     "config.target_compression=2.0 and config.tp_sweep='0.1,0.2'"),
    ({'target_flops': 0.5, 'guidance_per_round': True},
     'config.target_flops=0.5 cannot be combined with config.guidance_per_round=True'),
])
def test_bad_targets_are_refused_before_anything_runs(overrides, message):
  from autoflip_jax.config_checks import validate_config  # noqa: PLC0415
  with pytest.raises(ValueError) as err:
    validate_config(tiny_config(**overrides))
  assert message in str(err.value)
