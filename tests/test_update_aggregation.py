"""Robust aggregation of the cohort's models (`config.update_aggregation`: median, trimmed mean)
inside the jitted round: the order statistics, the round against an oracle built from one-client
rounds, pruned weights, shrunk rounds, a whole run and the config checks."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import config_checks, federated, shrink, train
from autoflip_jax import setup as setup_lib
from autoflip_jax import server as server_lib
from tests.helpers import tiny_config
from tests.test_privacy import _apply, _data, _mask, _params
from tests.test_shrink import _round_inputs
from tests.test_models_zoo import SMALL


def _trimmed(values, trim):
  s = np.sort(values, axis=0)
  k = int(np.floor(trim * len(values) + 1e-4))
  return s[k:len(values) - k].mean(axis=0)


@pytest.mark.parametrize('n_valid', [1, 2, 4, 5, 6])
def test_order_statistics_over_the_clients_with_examples(n_valid):
  rng = np.random.default_rng(n_valid)
  models = rng.normal(size=(6, 7, 3)).astype(np.float32)
  num = np.zeros(6, np.int32)
  num[rng.permutation(6)[:n_valid]] = rng.integers(1, 9, n_valid)
  valid = models[num > 0]
  got = federated.robust_average({'w': jnp.asarray(models)}, jnp.asarray(num), 'median')
  np.testing.assert_allclose(np.asarray(got['w']), np.median(valid, axis=0), rtol=1e-6)
  for trim in (0.0, 0.2, 0.25, 0.4):
    got = federated.robust_average({'w': jnp.asarray(models)}, jnp.asarray(num),
                                   'trimmed_mean', trim)
    np.testing.assert_allclose(np.asarray(got['w']), _trimmed(valid, trim), rtol=1e-5,
                               atol=1e-6, err_msg=f'trim {trim}')


def test_a_cohort_without_examples_gives_zeros():
  got = federated.robust_average({'w': jnp.ones((3, 2))}, jnp.zeros(3, jnp.int32), 'median')
  np.testing.assert_array_equal(np.asarray(got['w']), 0.0)


def test_the_median_ignores_one_wild_client():
  honest = np.linspace(-1.0, 1.0, 4, dtype=np.float32)[:, None]
  models = np.concatenate([honest, [[1e6]]]).astype(np.float32)
  got = federated.robust_average({'w': jnp.asarray(models)}, jnp.ones(5, jnp.int32), 'median')
  assert float(got['w'][0]) == pytest.approx(float(honest[2, 0]))  # third of the five sorted
  got = federated.robust_average({'w': jnp.asarray(models)}, jnp.ones(5, jnp.int32),
                                 'trimmed_mean', 0.2)
  assert float(got['w'][0]) == pytest.approx(float(honest[1:].mean()))


def _round(ns, aggregation='mean', trim=0.0, chunk=0, cohort_ids=None, **attack):
  fn = federated.make_round_fn(_apply, optimizer='sgd', local_epochs=1,
                               clients_per_chunk=chunk, aggregation=aggregation, trim=trim,
                               **attack)
  ns = np.asarray(ns, np.int32)
  ids = np.arange(len(ns), dtype=np.int32) if cohort_ids is None else np.asarray(cohort_ids)
  data = _data(ns)
  state = federated.ServerState(_params(), _mask(), jnp.int32(3))
  out, metrics = fn(state, data, jnp.asarray(ns), jnp.asarray(ids), jax.random.key(7),
                    jnp.float32(0.5), None)
  return jax.tree.map(np.asarray, out.params), metrics


def _one_client_models(ns):
  """Each client's own trained model: a round of that client alone is its model (weight 1);
  the client's shuffle key depends only on the seed, round and its id, not the cohort."""
  data = _data(np.asarray(ns, np.int32))
  fn = federated.make_round_fn(_apply, optimizer='sgd', local_epochs=1)
  out = []
  for k, n in enumerate(ns):
    one = jax.tree.map(lambda a: a[k:k + 1], data)
    state = federated.ServerState(_params(), _mask(), jnp.int32(3))
    p, _ = fn(state, one, jnp.asarray([n], jnp.int32), jnp.asarray([k], jnp.int32),
              jax.random.key(7), jnp.float32(0.5), None)
    out.append(jax.tree.map(np.asarray, p.params))
  return out


@pytest.mark.parametrize('aggregation,trim', [('median', 0.0), ('trimmed_mean', 0.2)])
def test_the_round_aggregates_the_clients_models_robustly(aggregation, trim):
  ns = [8, 5, 3, 8, 6]
  models = _one_client_models(ns)
  want = {name: (np.median if aggregation == 'median' else lambda v, axis: _trimmed(v, trim))(
      np.stack([m[name] for m in models]), axis=0) for name in models[0]}
  for chunk in (0, 1):  # one vmap, or a client at a time inside the scan
    got, metrics = _round(ns, aggregation, trim, chunk=chunk)
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert int(metrics.num_examples) == sum(ns)
  mask = jax.tree.map(np.asarray, _mask())
  assert np.all(got['w'][~mask['w']] == 0.0)  # pruned weights stay exactly 0
  plain, _ = _round(ns)
  assert not np.allclose(plain['w'], got['w'])  # not FedAvg's weighted mean


def test_default_round_is_bit_identical_with_mean_named():
  a, _ = _round([8, 5, 3, 8])
  b, _ = _round([8, 5, 3, 8], 'mean', 0.3)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_an_empty_client_does_not_count():
  ns = [8, 0, 5, 3]
  got, _ = _round(ns, 'median')
  # The median of clients 0, 2 and 3, each trained alone under its own id; client 1 (no
  # examples, its model is the global one) would move the median if it counted.
  data = _data(np.asarray(ns, np.int32))
  fn = federated.make_round_fn(_apply, optimizer='sgd', local_epochs=1)
  models = []
  for k in (0, 2, 3):
    state = federated.ServerState(_params(), _mask(), jnp.int32(3))
    p, _ = fn(state, jax.tree.map(lambda a: a[k:k + 1], data), jnp.asarray([ns[k]], jnp.int32),
              jnp.asarray([k], jnp.int32), jax.random.key(7), jnp.float32(0.5), None)
    models.append(np.asarray(p.params['w']))
  np.testing.assert_allclose(got['w'], np.median(np.stack(models), axis=0), rtol=1e-5, atol=1e-6)


def test_a_shrunk_robust_round_equals_the_masked_full_round():
  model, _ = SMALL['cnn']
  data, params, mask_list = _round_inputs('cnn', model, clients=3, variants=2)
  tx = server_lib.make('momentum', learning_rate=0.5)
  state = lambda: federated.ServerState(
      federated.stack(params), federated.stack(mask_list), jnp.zeros((2,), jnp.int32),
      federated.stack([server_lib.init(tx, p) for p in params]))
  union = jax.tree.map(lambda *ms: np.any(ms, axis=0), *mask_list)
  plan = shrink.plan(model, union)
  assert plan.removes_any
  kwargs = dict(num_variants=2, optimizer='sgd', local_epochs=1, server_tx=tx,
                variants_per_chunk=1, aggregation='median')
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  full = federated.make_variant_round_fn(apply_fn, **kwargs)
  small = federated.make_variant_round_fn(apply_fn, shrink_plan=plan, params_like=params[0],
                                          **kwargs)
  args = (data, jnp.array([6, 5, 6]), jnp.array([0, 1, 2]),
          jnp.stack([jax.random.key(s) for s in range(2)]), jnp.float32(0.05), None)
  want, _ = full(state(), *args)
  got, _ = small(state(), *args)
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                  atol=1e-5)
  jax.tree.map(close, got.params, want.params)
  jax.tree.map(close, got.server_opt, want.server_opt)


def test_a_run_with_the_median_of_updates(tmp_path):
  run = dict(algorithm='fedavg,autoflip', clients_per_round=3, num_rounds=2,
             **{'data.max_examples_per_client': 100, 'data.max_test_examples': 200})
  med = train.train_and_evaluate(tiny_config(**run, update_aggregation='median'),
                                 str(tmp_path / 'med'))
  mean = train.train_and_evaluate(tiny_config(**run), str(tmp_path / 'mean'))
  summary = json.loads((tmp_path / 'med' / 'summary.json').read_text())
  assert summary['config']['update_aggregation'] == 'median'
  assert [r['algorithm'] for r in med] == [r['algorithm'] for r in mean] == ['fedavg', 'autoflip']
  last = lambda d: {r['algorithm']: r for r in map(json.loads, (tmp_path / d / 'metrics.jsonl')
                                                   .read_text().splitlines()) if r['round'] == 2}
  got, want = last('med'), last('mean')
  for name in ('fedavg', 'autoflip'):
    assert np.isfinite(got[name]['test_loss'])
    assert got[name]['test_loss'] != want[name]['test_loss']  # the median is not the mean


def test_a_byzantine_client_sends_its_update_times_the_factor():
  ns = [8, 5, 3, 8]
  models = _one_client_models(ns)
  theta = jax.tree.map(np.asarray, federated_masked(_params(), _mask()))
  sent = [dict(m) for m in models]
  sent[2] = {k: theta[k] - 10.0 * (models[2][k] - theta[k]) for k in theta}  # client id 2
  w = np.asarray(ns, np.float32) / sum(ns)
  for chunk in (0, 1):
    got, _ = _round(ns, chunk=chunk, byzantine=(2, 17), byzantine_factor=-10.0)
    for k in theta:
      want = sum(wi * m[k] for wi, m in zip(w, sent))
      np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5)
  mask = jax.tree.map(np.asarray, _mask())
  assert np.all(got['w'][~mask['w']] == 0.0)
  # The median of the four sent models does not follow the attacker as the mean does.
  med, _ = _round(ns, 'median', byzantine=(2,), byzantine_factor=-10.0)
  honest = np.median(np.stack([m['w'] for m in models]), axis=0)
  assert np.abs(med['w'] - honest).max() < np.abs(got['w'] - honest).max() / 3


def federated_masked(params, mask):
  return jax.tree.map(lambda p, m: jnp.where(m, p, 0), params, mask)


def test_byzantine_clients_are_fixed_by_the_data_seed():
  a = setup_lib.byzantine_clients(20, 0.2, 0)
  assert len(a) == 4 and a == tuple(sorted(a)) and a == setup_lib.byzantine_clients(20, 0.2, 0)
  assert a != setup_lib.byzantine_clients(20, 0.2, 1)
  assert setup_lib.byzantine_clients(20, 0.0, 0) == ()


def test_a_run_with_byzantine_clients_is_hurt_and_the_median_resists(tmp_path):
  run = dict(algorithm='fedavg', clients_per_round=4, num_rounds=3, num_clients=4,
             learning_rate=0.1, **{'attack.update_fraction': 0.25, 'attack.update_factor': -30.0,
                                   'data.max_examples_per_client': 100,
                                   'data.max_test_examples': 200})
  acc = {}
  for name, extra in [('clean', {'attack.update_fraction': 0.0}), ('mean', {}),
                      ('median', {'update_aggregation': 'median'})]:
    rows = train.train_and_evaluate(tiny_config(**{**run, **extra}), str(tmp_path / name))
    acc[name] = rows[0]['test_accuracy']
  assert acc['mean'] < acc['clean'] - 0.05, acc  # one client in four reversing its update x30
  assert acc['median'] > acc['mean'] + 0.05, acc


@pytest.mark.parametrize('overrides,match', [
    (dict(update_aggregation='mode'), 'update_aggregation'),
    (dict(update_aggregation='trimmed_mean', update_trim=0.5), 'update_trim'),
    (dict(update_aggregation='trimmed_mean', update_trim=-0.1), 'update_trim'),
    (dict(update_aggregation='trimmed_mean', update_trim=0.2, clients_per_round=3),
     'cuts nothing of a cohort'),
    (dict(update_aggregation='median', **{'dp.clip': 1.0}), 'DP-FedAvg'),
    ({'attack.update_fraction': 1.0}, 'attack.update_fraction'),
    ({'attack.update_fraction': -0.1}, 'attack.update_fraction'),
    ({'attack.update_factor': float('nan')}, 'attack.update_factor'),
])
def test_bad_update_aggregation_is_refused_before_compile(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_checks.validate_config(tiny_config(**overrides))
