"""Tests for autoflip_jax.exploration: federated loss exploration and the guidance matrix."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import exploration, local
from autoflip_jax.models.cnn import CNN

MODEL = CNN(num_classes=3, channels=(4, 8), hidden=16)
BATCH, STEPS = 4, 2
# lr 0.2 over 5 epochs with patience 1: the explorers stop early at different epochs ([5, 5, 2]),
# which exercises the vmapped while_loop with per-client stopping.
KW = dict(optimizer='adam', learning_rate=0.2, epochs=5, patience=1)


def apply_fn(p, x):
  return MODEL.apply({'params': p}, x)


# --- guidance (server aggregation) -----------------------------------------------------------

SQDEV = {'w': jnp.array([[0.0, 4.0, 0.0, 8.0],
                         [4.0, 0.0, 0.0, 0.0],
                         [90.0, 0.0, 70.0, 10.0]]),
         'b': jnp.array([[1.0, 3.0], [3.0, 1.0], [5.0, 5.0]])}


def test_guidance_plain_mean_then_minmax():
  g = jax.tree.map(np.asarray, exploration.guidance(jax.tree.map(lambda d: d[:2], SQDEV)))
  # mean [2, 2, 0, 4] -> minmax [.5, .5, 0, 1]; b: mean [2, 2] is constant -> 0.
  np.testing.assert_allclose(g['w'], [0.5, 0.5, 0.0, 1.0], atol=1e-7)
  np.testing.assert_array_equal(g['b'], [0.0, 0.0])
  # Three explorers, plain mean: w [94/3, 4/3, 70/3, 6] -> (x - 4/3) / 30.
  g3 = np.asarray(exploration.guidance(SQDEV)['w'])
  np.testing.assert_allclose(g3, [1.0, 0.0, (70 - 4) / 90, (18 - 4) / 90], atol=1e-6)


def test_guidance_example_weighted_mean():
  g = exploration.guidance(jax.tree.map(lambda d: d[:2], SQDEV), weights=jnp.array([1, 3]))
  # 0.25 * [0, 4, 0, 8] + 0.75 * [4, 0, 0, 0] = [3, 1, 0, 2] -> [1, 1/3, 0, 2/3].
  np.testing.assert_allclose(g['w'], [1.0, 1 / 3, 0.0, 2 / 3], atol=1e-6)
  # b: 0.25 * [1, 3] + 0.75 * [3, 1] = [2.5, 1.5] -> [1, 0].
  np.testing.assert_allclose(g['b'], [1.0, 0.0], atol=1e-6)


def test_guidance_weight_zero_explorer_ignored():
  # The third explorer's large deviations must not count with weight 0.
  g = exploration.guidance(SQDEV, weights=jnp.array([1, 3, 0]))
  np.testing.assert_allclose(g['w'], [1.0, 1 / 3, 0.0, 2 / 3], atol=1e-6)
  g = exploration.guidance(SQDEV, weights=jnp.array([0, 5, 0]))
  np.testing.assert_allclose(g['w'], [1.0, 0.0, 0.0, 0.0], atol=1e-6)


def test_guidance_robust_normalization():
  g = exploration.guidance({'w': jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]] * 2)},
                           normalization='robust')
  np.testing.assert_allclose(g['w'], [-1.0, -0.5, 0.0, 0.5, 1.0], atol=1e-6)
  with pytest.raises(ValueError):
    exploration.guidance(SQDEV, normalization='nope')


def test_deviation():
  d = exploration.deviation({'a': jnp.array([1.0, -2.0])}, {'a': jnp.array([4.0, 1.0])})
  np.testing.assert_array_equal(d['a'], [9.0, 9.0])


# --- exploration on the device ----------------------------------------------------------------

def _client_data(ns, seed=0):
  """Clients with ns[k] real examples, zero padding, stacked on a leading client axis."""
  rng = np.random.default_rng(seed)
  k = len(ns)
  x = rng.normal(size=(k, STEPS * BATCH, 12, 12, 1)).astype(np.float32)
  y = rng.integers(0, 3, (k, STEPS * BATCH)).astype(np.int32)
  valid = np.arange(STEPS * BATCH)[None] < np.asarray(ns)[:, None]
  x[~valid], y[~valid] = 0.0, 0
  return local.ClientData(jnp.asarray(x.reshape(k, STEPS, BATCH, 12, 12, 1)),
                          jnp.asarray(y.reshape(k, STEPS, BATCH)), jnp.asarray(valid.reshape(
                              k, STEPS, BATCH)))


@pytest.fixture(scope='module')
def setup():
  params0 = jax.jit(MODEL.init)(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))['params']
  data = _client_data([5, 8, 2])
  client_ids = jnp.array([4, 0, 9], jnp.int32)
  rng = jax.random.PRNGKey(42)
  explore = exploration.make_explore_fn(apply_fn, **KW)
  return params0, data, client_ids, rng, explore(params0, data, client_ids, rng)


def test_explore_vmapped_equals_loop(setup):
  params0, data, client_ids, rng, out = setup
  one = jax.jit(functools.partial(exploration.explore_client, apply_fn=apply_fn, **KW))
  for k, cid in enumerate(np.asarray(client_ids)):
    d = jax.tree.map(lambda a: a[k], data)
    sqdev, loss, epochs_run = one(params0, d, jax.random.fold_in(rng, int(cid)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[k], b, atol=1e-5, rtol=1e-4),
                 out.sqdev, sqdev)
    np.testing.assert_allclose(out.final_loss[k], loss, rtol=1e-5)
    assert int(out.epochs_run[k]) == int(epochs_run)
  assert out.final_loss.shape == (3,) and out.epochs_run.shape == (3,)
  # Different clients (and keys) explore differently.
  w = np.asarray(out.sqdev['dense0']['kernel'])
  assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize('chunk', [1, 2])
def test_explore_in_chunks_equals_one_vmap(setup, chunk):
  """One explorer at a time (each stopping early on its own) or chunks of 2 (a remainder of 1):
  the same deviations, losses and epochs as all explorers in one vmap."""
  params0, data, client_ids, rng, out = setup
  got = exploration.make_explore_fn(apply_fn, clients_per_chunk=chunk, **KW)(
      params0, data, client_ids, rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), got.sqdev,
               out.sqdev)
  np.testing.assert_allclose(got.final_loss, out.final_loss, rtol=1e-5)
  np.testing.assert_array_equal(got.epochs_run, out.epochs_run)


def test_explore_sqdev_nonnegative_and_positive_somewhere(setup):
  params0, _, _, _, out = setup
  for leaf, p in zip(jax.tree.leaves(out.sqdev), jax.tree.leaves(params0)):
    leaf = np.asarray(leaf)
    assert leaf.shape == (3,) + p.shape
    assert np.all(leaf >= 0.0)
    assert np.all(np.isfinite(leaf))
  assert all(np.any(np.asarray(l) > 0) for l in jax.tree.leaves(out.sqdev))
  # Early stopping differs per explorer, and never exceeds the epoch budget.
  runs = np.asarray(out.epochs_run)
  assert len(set(runs.tolist())) > 1 and runs.min() >= 2 and runs.max() <= KW['epochs']


def test_trajectory_includes_final_deviation(setup):
  params0, data, client_ids, rng, out = setup
  traj = exploration.make_explore_fn(apply_fn, trajectory=True, **KW)(params0, data, client_ids,
                                                                       rng)
  np.testing.assert_array_equal(traj.epochs_run, out.epochs_run)
  np.testing.assert_allclose(traj.final_loss, out.final_loss, rtol=1e-6)
  # Sum over the epochs run of (theta_e - theta0)^2 includes the last epoch's term.
  for t, f in zip(jax.tree.leaves(traj.sqdev), jax.tree.leaves(out.sqdev)):
    t, f = np.asarray(t), np.asarray(f)
    assert np.all(t >= f - 1e-7 - 1e-5 * f)
  # Every explorer ran >= 2 epochs, so the trajectory adds earlier, non-zero deviations on top.
  t = np.asarray(traj.sqdev['dense0']['kernel'])
  f = np.asarray(out.sqdev['dense0']['kernel'])
  for k in range(3):
    assert np.sum(t[k]) > np.sum(f[k]) * 1.001, k
