"""Bucketing before the robust aggregations (Karimireddy et al. 2022): of the training updates
(`update_bucket`) and of the explorers' reports (`guidance_bucket`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import config_checks, exploration, federated, train
from autoflip_jax.algorithms import autoflip
from tests.helpers import tiny_config
from tests.test_update_aggregation import _one_client_models, _round


@pytest.mark.parametrize('rows,size,n_valid', [(7, 2, 7), (7, 2, 6), (6, 3, 4), (5, 2, 1),
                                               (8, 4, 0)])
def test_every_valid_row_is_in_exactly_one_bucket(rows, size, n_valid):
  rng = np.random.default_rng(rows * 10 + n_valid)
  valid = np.zeros(rows, bool)
  valid[rng.permutation(rows)[:n_valid]] = True
  # Row i is the i-th unit vector: a bucket mean holds 1/size at each of its members.
  means, holds = federated.bucket_means({'w': jnp.eye(rows)}, jnp.asarray(valid), size,
                                        jax.random.key(3))
  weights = np.asarray(means['w'])
  assert weights.shape == (federated.num_buckets(rows, size), rows)
  member = weights > 0
  np.testing.assert_array_equal(member.sum(axis=0), valid.astype(int))  # once each, or never
  full = federated.num_buckets(n_valid, size)
  np.testing.assert_array_equal(np.asarray(holds), np.arange(len(holds)) < full)
  sizes = member.sum(axis=1)
  assert np.all(sizes[:max(full - 1, 0)] == size) and np.all(sizes[full:] == 0)
  if full:
    assert sizes[full - 1] == n_valid - size * (full - 1)  # the last holds what is left
  for b in range(full):  # an unweighted mean of its members
    np.testing.assert_allclose(weights[b][member[b]], 1.0 / sizes[b], rtol=1e-6)


def test_the_order_is_random_and_fixed_by_the_key():
  eye = {'w': jnp.eye(12)}
  valid = jnp.ones(12, bool)
  a = np.asarray(federated.bucket_means(eye, valid, 3, jax.random.key(0))[0]['w'])
  b = np.asarray(federated.bucket_means(eye, valid, 3, jax.random.key(0))[0]['w'])
  c = np.asarray(federated.bucket_means(eye, valid, 3, jax.random.key(1))[0]['w'])
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert not np.array_equal(a > 0, np.repeat(np.eye(4), 3, axis=1) > 0)  # not the input order


@pytest.mark.parametrize('aggregation,trim', [('median', 0.0), ('trimmed_mean', 0.25)])
def test_robust_average_takes_the_order_statistic_of_the_bucket_means(aggregation, trim):
  rng = np.random.default_rng(0)
  models = {'w': jnp.asarray(rng.normal(size=(9, 4, 3)).astype(np.float32))}
  num = jnp.asarray([5, 0, 3, 2, 7, 1, 0, 4, 6], jnp.int32)
  key = jax.random.key(5)
  means, holds = federated.bucket_means(models, num > 0, 2, key)
  buckets = np.asarray(means['w'])[np.asarray(holds)]  # 7 clients with examples: 4 buckets
  assert len(buckets) == 4
  got = federated.robust_average(models, num, aggregation, trim, bucket=2, key=key)
  if aggregation == 'median':
    want = np.median(buckets, axis=0)
  else:  # ⌊0.25 · 4⌋ = 1 bucket cut at each end
    want = np.sort(buckets, axis=0)[1:3].mean(axis=0)
  np.testing.assert_allclose(np.asarray(got['w']), want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='key'):
    federated.robust_average(models, num, aggregation, trim, bucket=2)


def test_the_round_takes_the_median_of_bucket_means_of_the_clients_models():
  ns = [8, 5, 3, 8, 6, 4, 7]
  models = _one_client_models(ns)
  stacked = {name: jnp.asarray(np.stack([m[name] for m in models])) for name in models[0]}
  # The round's key (`_round`: rng key(7), round 3) and the bucketing stream.
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), federated.BUCKET_STREAM), 3)
  means, _ = federated.bucket_means(stacked, jnp.ones(7, bool), 2, key)  # 4 buckets
  for chunk in (0, 1):
    got, _ = _round(ns, 'median', chunk=chunk, bucket=2)
    for name in stacked:
      np.testing.assert_allclose(got[name], np.median(np.asarray(means[name]), axis=0),
                                 rtol=1e-5, atol=1e-6)
  plain, _ = _round(ns, 'median')
  assert not np.allclose(plain['w'], got['w'])


def test_bucketed_guidance_is_the_order_statistic_of_the_bucket_means():
  rng = np.random.default_rng(1)
  reports = {'k': jnp.asarray(rng.lognormal(size=(20, 30, 8)).astype(np.float32))}
  key = jax.random.key(2)
  means, _ = federated.bucket_means(reports, jnp.ones(20, bool), 2, key)
  got = exploration.aggregate(reports, aggregation='median', bucket=2, key=key)
  np.testing.assert_allclose(np.asarray(got['k']), np.median(np.asarray(means['k']), axis=0),
                             rtol=1e-6)
  got = exploration.aggregate(reports, aggregation='trimmed_mean', trim=0.2, bucket=2, key=key)
  want = np.sort(np.asarray(means['k']), axis=0)[2:8].mean(axis=0)  # 10 buckets, 2 cut each end
  np.testing.assert_allclose(np.asarray(got['k']), want, rtol=1e-5)
  # On heavy-tailed honest reports the bucketed median lies nearer the mean than the median.
  mean = np.asarray(exploration.aggregate(reports)['k'])
  median = np.asarray(exploration.aggregate(reports, aggregation='median')['k'])
  bucketed = np.asarray(exploration.aggregate(reports, aggregation='median', bucket=4,
                                              key=key)['k'])
  assert np.abs(bucketed - mean).mean() < 0.7 * np.abs(median - mean).mean()
  with pytest.raises(ValueError, match='bucket'):
    exploration.aggregate(reports, aggregation='mean', bucket=2, key=key)


def test_the_server_guidance_buckets_with_the_runs_key():
  rng = np.random.default_rng(2)
  reports = {'k': jnp.asarray(rng.lognormal(size=(10, 6, 4)).astype(np.float32))}
  config = tiny_config(num_clients=10, guidance_aggregation='median', guidance_bucket=2)
  run_key = jax.random.key(4)
  got = autoflip.server_guidance(config, reports, None, run_key)
  want = exploration.guidance(reports, None, config.guidance_normalization, 'median', bucket=2,
                              key=jax.random.fold_in(run_key, autoflip.BUCKET_KEY))
  np.testing.assert_array_equal(np.asarray(got['k']), np.asarray(want['k']))
  plain = autoflip.server_guidance(tiny_config(num_clients=10, guidance_aggregation='median'),
                                   reports, None, run_key)
  assert not np.allclose(np.asarray(plain['k']), np.asarray(got['k']))


def test_runs_with_bucketed_robust_aggregations(tmp_path):
  run = dict(algorithm='autoflip', num_clients=6, clients_per_round=6, c_exp=1.0,
             **{'data.max_examples_per_client': 60, 'data.max_test_examples': 100})
  rows = train.train_and_evaluate(
      tiny_config(**run, update_aggregation='median', update_bucket=2,
                  guidance_aggregation='trimmed_mean', guidance_trim=0.34, guidance_bucket=2),
      str(tmp_path / 'bucketed'))
  assert np.isfinite(rows[0]['test_accuracy']) and rows[0]['compression'] > 1.0


@pytest.mark.parametrize('overrides,match', [
    (dict(update_bucket=2), "update_aggregation='mean'"),
    (dict(update_bucket=0, update_aggregation='median'), 'update_bucket'),
    (dict(update_bucket=3, update_aggregation='median', num_clients=6, clients_per_round=6),
     'leaves 2 bucket'),
    (dict(update_bucket=2, update_aggregation='trimmed_mean', update_trim=0.2, num_clients=6,
          clients_per_round=6), 'cuts nothing of the 3 buckets'),
    (dict(guidance_bucket=2, num_clients=10), 'guidance_aggregation'),
    (dict(guidance_bucket=2, num_clients=10, guidance_aggregation='filtered_mean'),
     'guidance_aggregation'),
    (dict(guidance_bucket=5, num_clients=10, guidance_aggregation='median'), 'leaves 2 bucket'),
    (dict(guidance_bucket=2, num_clients=10, guidance_aggregation='trimmed_mean',
          guidance_trim=0.1), 'guidance_trim'),
    (dict(guidance_bucket=2, num_clients=10, guidance_aggregation='median',
          guidance_per_round=True), 'guidance_per_round'),
    (dict(guidance_bucket=0), 'guidance_bucket'),
])
def test_bad_buckets_are_refused_before_compile(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_checks.validate_config(tiny_config(**overrides))
