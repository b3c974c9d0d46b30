"""Server optimizers (FedAvgM, FedAdam, FedYogi) and the warm start, with hand-computed steps."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import federated, local, server, train
from autoflip_jax import setup as setup_lib
from tests.helpers import tiny_config

MASK = {'w': jnp.array([[True, False], [True, True]])}


def _linear(p, x):
  return x @ p['w']


def _cohort():
  """Two clients, one full batch of 2 examples each (one SGD step: no shuffle matters)."""
  x = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [0.5, -1.0]]]])  # [2, 1, 2, 2]
  y = jnp.array([[[0, 1]], [[1, 0]]], jnp.int32)
  return local.ClientData(x, y, jnp.ones((2, 1, 2), bool)), jnp.array([2, 2]), jnp.arange(2)


def _round(tx, params, opt_state, round_num=0, mask=MASK):
  fn = federated.make_round_fn(_linear, optimizer='sgd', local_epochs=1, server_tx=tx)
  copy = lambda t: jax.tree.map(jnp.copy, t)  # the round donates its state
  state = federated.ServerState(copy(params), copy(mask), jnp.int32(round_num), copy(opt_state))
  data, n, ids = _cohort()
  return fn(state, data, n, ids, jax.random.key(0), jnp.float32(0.5), None)[0]


def _fedavg(params, round_num=0):
  """The plain average θ̄ of the round from `params` (FedAvg, no server optimizer)."""
  return _round(None, params, (), round_num).params['w']


P0 = {'w': jnp.array([[0.3, 0.0], [-0.2, 0.4]])}


def test_sgd_with_rate_one_is_fedavg_exactly():
  assert server.make('sgd', 1.0) is None
  tx = server.make('sgd', 0.5)
  got = _round(tx, P0, tx.init(P0)).params['w']
  # θ1 = θ0 - 0.5 (θ0 - θ̄) = θ0 + 0.5 (θ̄ - θ0)
  np.testing.assert_allclose(got, P0['w'] + 0.5 * (_fedavg(P0) - P0['w']), atol=1e-7)


def test_fedavgm_two_rounds_by_hand():
  beta, eta = 0.9, 1.0
  tx = server.make('momentum', eta, momentum=beta)
  s1 = _round(tx, P0, tx.init(P0))
  g1 = P0['w'] - _fedavg(P0)
  np.testing.assert_allclose(s1.params['w'], P0['w'] - eta * g1, atol=1e-6)
  s2 = _round(tx, s1.params, s1.server_opt, round_num=1)
  g2 = s1.params['w'] - _fedavg(s1.params, round_num=1)
  np.testing.assert_allclose(s2.params['w'], s1.params['w'] - eta * (beta * g1 + g2), atol=1e-6)
  assert s2.params['w'][0, 1] == 0.0


def test_fedadam_first_step_by_hand():
  eta, eps = 0.1, 1e-3
  tx = server.make('adam', eta, b1=0.9, b2=0.99, eps=eps)
  got = _round(tx, P0, tx.init(P0)).params['w']
  g = np.asarray(P0['w'] - _fedavg(P0))
  # First Adam step, bias-corrected: m̂ = g, v̂ = g², update = -η g / (|g| + ε).
  want = np.where(np.asarray(MASK['w']), np.asarray(P0['w']) - eta * g / (np.abs(g) + eps), 0)
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize('name', ['momentum', 'adam', 'yogi'])
def test_pruned_coordinates_and_their_state_stay_zero_when_the_mask_changes(name):
  tx = server.make(name, 0.1)
  dense = {'w': jnp.ones((2, 2), bool)}
  s1 = _round(tx, P0, tx.init(P0), mask=dense)  # everything moves, the state fills up
  assert all(float(jnp.abs(x).sum()) > 0 for x in jax.tree.leaves(s1.server_opt)
             if x.shape == (2, 2))
  s2 = _round(tx, s1.params, s1.server_opt, round_num=1, mask=MASK)  # (0, 1) is now pruned
  assert s2.params['w'][0, 1] == 0.0
  params_shaped = [x for x in jax.tree.leaves(s2.server_opt) if x.shape == (2, 2)]
  assert params_shaped and all(x[0, 1] == 0.0 for x in params_shaped)
  assert all(float(jnp.abs(x).sum()) > 0 for x in params_shaped)


def test_empty_round_leaves_model_and_state_unchanged():
  tx = server.make('momentum', 1.0)
  s1 = _round(tx, P0, tx.init(P0))
  fn = federated.make_round_fn(_linear, optimizer='sgd', local_epochs=1, server_tx=tx)
  data, _, ids = _cohort()
  state = federated.ServerState(jax.tree.map(jnp.copy, s1.params), {'w': jnp.copy(MASK['w'])},
                                jnp.int32(1),
                                jax.tree.map(jnp.copy, s1.server_opt))
  out = fn(state, data, jnp.array([0, 0]), ids, jax.random.key(0), jnp.float32(0.5), None)[0]
  jax.tree.map(np.testing.assert_array_equal, (out.params, out.server_opt),
               (s1.params, s1.server_opt))


def test_warm_start_trains_theta0_once_for_every_algorithm():
  config = tiny_config(warmup_epochs=1)
  warm = setup_lib.resolve(config)
  cold = setup_lib.resolve(tiny_config())
  assert warm.params0(0) is warm.params0(0)  # made once: every algorithm gets the same θ0
  diff = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(warm.params0(0)),
                                                       jax.tree.leaves(cold.params0(0)))]
  assert max(diff) > 0
  again = setup_lib.resolve(tiny_config(warmup_epochs=1)).params0(0)
  jax.tree.map(np.testing.assert_array_equal, again, warm.params0(0))
  assert 0 <= setup_lib.warmup_client(config.num_clients, 0) < config.num_clients


def test_server_state_resumes_bit_identically(tmp_path):
  """FedAvgM after a warm start: lose the last checkpoint, rerun, get the same rows and model."""
  overrides = dict(algorithm='fedavg', server_optimizer='momentum', warmup_epochs=1,
                   num_rounds=3, checkpoint_every=2, **{'data.max_test_examples': 200})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(**overrides), workdir)
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'progress.json'))
  shutil.rmtree(os.path.join(copy, 'checkpoints', 'fedavg', '3'))
  train.train_and_evaluate(tiny_config(**overrides), copy)
  rows = lambda wd: [{k: v for k, v in json.loads(l).items() if k != 'round_seconds'}
                     for l in open(os.path.join(wd, 'metrics.jsonl'))]
  assert sorted(map(json.dumps, rows(copy))) == sorted(map(json.dumps, rows(workdir)))
  assert len(os.listdir(os.path.join(copy, 'checkpoints', 'fedavg', '3', 'tree'))) > 0


@pytest.mark.parametrize('field, value, message', [
    ('server_optimizer', 'adagrad', "config.server_optimizer='adagrad' is not one of"),
    ('server_learning_rate', 0.0, 'config.server_learning_rate=0.0'),
    ('server_momentum', 1.0, 'config.server_momentum=1.0'),
    ('warmup_epochs', -1, 'config.warmup_epochs=-1'),
])
def test_bad_server_fields_are_named(field, value, message):
  from autoflip_jax.config_checks import validate_config
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace('[', r'\[')):
    validate_config(tiny_config(**{field: value}))
