"""`config.exploration_chain`: the reference code's exploration, explorers chained on one model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import exploration, local, masks, train
from autoflip_jax import setup as setup_lib
from autoflip_jax.algorithms import autoflip
from autoflip_jax.config_checks import validate_config
from tests.helpers import tiny_config


def _setup(**overrides):
  config = tiny_config(**overrides)
  validate_config(config)
  return setup_lib.resolve(config)


def test_chain_trains_the_explorers_one_after_another_in_id_order():
  setup = _setup(exploration_chain='autoflip', e_exp=2)
  config = setup.config
  params0 = setup.params0(0)
  start, chain, _ = setup.chain(0)
  jax.tree.map(np.testing.assert_array_equal, start, params0)
  ids = autoflip.explorer_ids(config.num_clients, config.c_exp, 0)
  assert len(ids) == config.num_clients  # c_exp = 1: every client, in id order
  params, rng = params0, setup_lib.init_key(0)
  for k in ids:  # the reference: each explorer trains the model the previous one left
    data, _ = setup.pack(np.array([k]), place=False)
    params = local.train(params, masks.ones_mask(params), jax.tree.map(lambda a: jnp.asarray(a[0]), data),
                         jax.random.fold_in(rng, int(k)), apply_fn=setup.apply_fn,
                         optimizer=config.optimizer, learning_rate=config.learning_rate,
                         epochs=config.e_exp).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               chain.params, params)
  assert chain.epochs_run.tolist() == [2] * len(ids)
  # Run once per seed, shared by every algorithm of the run.
  assert setup.chain(0)[1] is chain


def test_guidance_is_the_last_models_deviation_and_autoflip_starts_from_it():
  setup = _setup(exploration_chain='autoflip')
  params0 = setup.params0(0)
  start = autoflip.init(setup.context(0), params0, setup_lib.init_key(0), (0.3,))[0]
  end = setup.chain(0)[1].params
  jax.tree.map(np.testing.assert_array_equal, start.params, end)
  expected = autoflip.mask_from_guidance(setup.config, setup.units, 0.3)(
      masks.normalize(exploration.deviation(end, params0), 'minmax'))
  jax.tree.map(np.testing.assert_array_equal, start.mask, expected)
  assert start.info['exploration_chain'] == 'autoflip'
  # Whatever `params0` a caller passes (a control under 'all' holds the chain's end), the
  # guidance deviates from the chain's own start.
  again = autoflip.init(setup.context(0), end, setup_lib.init_key(0), (0.3,))[0]
  jax.tree.map(np.testing.assert_array_equal, again.mask, start.mask)


def test_start_mode_explores_the_chain_end_with_independent_explorers():
  setup = _setup(exploration_chain='start', guidance_aggregation='median')
  end = setup.chain(0)[1].params
  jax.tree.map(np.testing.assert_array_equal, setup.start_params(0), end)
  start = autoflip.init(setup.context(0), end, setup_lib.init_key(0), (0.3,))[0]
  assert start.params is None  # trains from the model it was given: the chain's end
  # The paper's exploration of that model, as a run without the chain would explore it.
  plain = _setup(guidance_aggregation='median')
  expected = autoflip.init(plain.context(0), end, setup_lib.init_key(0), (0.3,))[0]
  jax.tree.map(np.testing.assert_array_equal, start.mask, expected.mask)
  chained = autoflip.init(_setup(exploration_chain='all').context(0), end,
                          setup_lib.init_key(0), (0.3,))[0]
  assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(start.mask),
                                                   jax.tree.leaves(chained.mask)))


@pytest.mark.parametrize('mode', ['autoflip', 'all', 'start'])
def test_runs_start_from_the_chain_end_as_the_mode_says(tmp_path, monkeypatch, mode):
  seen = {}
  original = setup_lib.Setup.server_state

  def record(self, params, round_masks=None):
    if round_masks is not None:  # round 0 of each algorithm (train.start_run), in order
      seen[len(seen)] = (params, round_masks)
    return original(self, params, round_masks)

  monkeypatch.setattr(setup_lib.Setup, 'server_state', record)
  config = tiny_config(algorithm='autoflip,fedavg', num_rounds=1, exploration_chain=mode,
                       **{'data.max_test_examples': 200})
  train.train_and_evaluate(config, str(tmp_path / mode))
  setup = _setup(exploration_chain=mode)
  end, theta0 = setup.chain(0)[1].params, setup.params0(0)
  (autoflip_params, autoflip_masks), (fedavg_params, _) = seen[0], seen[1]
  assert config.sparse_init == 'fan_in'  # the default job's: AutoFLIP's start is the chain's
  # end rescaled to its mask's kept fan-in (FedAvg's all-kept mask leaves its start as it is)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               autoflip_params[0], masks.rescale_fan_in(end, autoflip_masks[0]))
  assert not all(jax.tree.leaves(jax.tree.map(lambda m: bool(jnp.all(m)), autoflip_masks[0])))
  fedavg_expected = theta0 if mode == 'autoflip' else end
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
               fedavg_params[0], fedavg_expected)


@pytest.mark.parametrize('override, name', [
    ({'exploration_chain': 'yes'}, 'exploration_chain'),
    ({'guidance_per_round': True}, 'guidance_per_round'),
    ({'guidance_aggregation': 'median'}, 'guidance_aggregation'),
    ({'attack.fraction': 0.25}, 'attack.fraction'),
    ({'dp.exploration_clip': 1.0}, 'dp.exploration_clip'),
    ({'exploration_trajectory': True}, 'exploration_trajectory'),
])
def test_bad_or_clashing_fields_are_refused_before_compile(override, name):
  config = tiny_config(**{'exploration_chain': 'autoflip', **override})
  with pytest.raises(ValueError, match=name.replace('.', r'\.')):
    validate_config(config)
