"""Skewed clients: the cohort-sized padding (`config.pad_steps`) and the step cap
(`config.max_local_steps`)."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoflip_jax import config_checks, local, masks, schedule, setup, train
from tests.helpers import tiny_config


def _dataset(sizes, seed=0):
  rng = np.random.default_rng(seed)
  xs = [rng.normal(size=(n, 3)).astype(np.float32) for n in sizes]
  ys = [rng.integers(0, 4, n).astype(np.int32) for n in sizes]
  return types.SimpleNamespace(client_x=xs, client_y=ys, client_sizes=np.array(sizes))


def test_cohort_padding_rounds_steps_up_to_a_power_of_two_below_the_largest():
  pack = setup.make_packer(_dataset([3, 9, 17, 40]), 4, pad='cohort')
  assert pack.max_steps == 10
  assert [pack.steps_for(ids) for ids in ([0], [0, 1], [1, 2], [2, 3])] == [1, 4, 8, 10]
  data, n = pack(np.array([0, 1]), place=False)
  assert data.y.shape == (2, 4, 4) and n.tolist() == [3, 9]
  largest = setup.make_packer(_dataset([3, 9, 17, 40]), 4, pad='largest')
  assert largest(np.array([0, 1]), place=False)[0].y.shape == (2, 10, 4)


def _apply(p, x):
  return x @ p['w']


def _train(data, key, **kw):
  params = {'w': jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)}
  return local.train(params, masks.ones_mask(params), data, key, apply_fn=_apply,
                     optimizer='sgd', learning_rate=0.1, **kw).params['w']


def test_a_client_trains_the_same_however_far_it_is_padded():
  dataset = _dataset([10, 3])
  key = jax.random.key(3)
  outs = []
  for pad in ('largest', 'cohort'):
    data, _ = setup.make_packer(dataset, 4, pad=pad)(np.array([1]), place=False)
    outs.append(_train(jax.tree.map(lambda a: jnp.asarray(a[0]), data), key, epochs=3))
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)


def test_max_local_steps_trains_that_many_batches_drawn_from_all_the_data():
  dataset = _dataset([10])
  data, n = setup.make_packer(dataset, 4, max_local_steps=1)(np.array([0]), place=False)
  assert n.tolist() == [4]  # FedAvg weighs the examples an epoch trains on
  one = jax.tree.map(lambda a: jnp.asarray(a[0]), data)
  key = jax.random.key(5)
  got = _train(one, key, epochs=1, max_steps=1)
  # By hand: one SGD step on the first batch of the epoch's random order.
  order = np.asarray(local.epoch_order(jax.random.fold_in(key, 0), one.valid.reshape(-1)))[:4]
  x = np.asarray(one.x).reshape(-1, 3)[order]
  y = np.asarray(one.y).reshape(-1)[order]
  w0 = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32)
  loss = lambda w: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x @ w, y))
  np.testing.assert_allclose(got, w0 - 0.1 * jax.grad(loss)(w0), rtol=1e-5, atol=1e-6)
  # A cap at or above the client's steps changes nothing.
  np.testing.assert_allclose(_train(one, key, epochs=2, max_steps=3), _train(one, key, epochs=2),
                             rtol=1e-6)


@pytest.mark.parametrize('field, value, match', [('max_local_steps', -1, 'max_local_steps'),
                                                 ('pad_steps', 'cohorts', 'pad_steps')])
def test_bad_skew_fields_are_named(field, value, match):
  with pytest.raises(ValueError, match=match):
    config_checks.validate_config(tiny_config(**{field: value}))


def _skewed(**overrides):
  # 10 Dirichlet(0.1) clients: a few large, many small; batch 16 gives cohorts of 1 to 16 steps.
  return tiny_config(**{'data.partition': 'dirichlet', 'data.alpha': 0.1, 'num_clients': 10,
                        'clients_per_round': 3, 'batch_size': 16, 'num_rounds': 2,
                        'algorithm': 'fedavg', 'seeds': '0,1', **overrides})


def _accuracies(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [(r['seed'], r['round'], r['test_accuracy']) for r in map(json.loads, f)]


def test_a_run_padded_per_cohort_equals_one_padded_to_the_largest_client(tmp_path):
  config = _skewed()
  s = setup.resolve(config)

  cohorts = [schedule.sample_clients(seed, r, 10, 3) for seed in (0, 1) for r in (1, 2)]
  assert min(s.pack.steps_for(ids) for ids in cohorts) < s.pack.max_steps  # padding is saved
  runs = {}
  for pad in ('cohort', 'largest'):
    train.train_and_evaluate(_skewed(pad_steps=pad), str(tmp_path / pad))
    runs[pad] = _accuracies(tmp_path / pad)
  assert [r[:2] for r in runs['cohort']] == [r[:2] for r in runs['largest']]
  np.testing.assert_allclose([r[2] for r in runs['cohort']], [r[2] for r in runs['largest']],
                             atol=2e-3)
