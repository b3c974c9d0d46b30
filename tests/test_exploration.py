"""Tests for autoflip_jax.exploration: federated loss exploration and the guidance matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import exploration, local
from autoflip_jax.algorithms import autoflip
from autoflip_jax.models.cnn import CNN
from tests.helpers import tiny_config
from tests.linear_oracle import LIN_B, LIN_W, linear_apply
from tests.linear_oracle import lin_clients as _lin_clients
from tests.linear_oracle import np_grad_and_loss as _np_grad_and_loss

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


def test_guidance_weights_change_the_result():
  """The weights are used (the weighted guidance differs from the plain one), only their ratios
  count, and a third explorer's weight moves the mean by hand-known amounts."""
  two = jax.tree.map(lambda d: d[:2], SQDEV)
  plain = np.asarray(exploration.guidance(two)['w'])
  weighted = np.asarray(exploration.guidance(two, weights=jnp.array([1, 3]))['w'])
  np.testing.assert_allclose(plain, [0.5, 0.5, 0.0, 1.0], atol=1e-7)
  assert np.max(np.abs(weighted - plain)) > 0.3
  # Weights 0.5 and 1.5 are 1 and 3 up to scale: the same minmax of [3, 1, 0, 2].
  g = exploration.guidance(two, weights=jnp.array([0.5, 1.5]))
  np.testing.assert_allclose(g['w'], [1.0, 1 / 3, 0.0, 2 / 3], atol=1e-6)
  # Weights [1, 1, 2] / 4 on all three: w = [(0+4+180)/4, (4+0+0)/4, (0+0+140)/4, (8+0+20)/4]
  # = [46, 1, 35, 7] -> (x - 1) / 45; b = [(1+3+10)/4, (3+1+10)/4] = [3.5, 3.5] -> 0.
  g = exploration.guidance(SQDEV, weights=jnp.array([1.0, 1.0, 2.0]))
  np.testing.assert_allclose(g['w'], [1.0, 0.0, 34 / 45, 6 / 45], atol=1e-6)
  np.testing.assert_allclose(g['b'], [0.0, 0.0], atol=1e-7)


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
  rng = jax.random.PRNGKey(43)  # a key under which the explorers stop after different epochs
  explore = exploration.make_explore_fn(apply_fn, **KW)
  return params0, data, client_ids, rng, explore(params0, data, client_ids, rng)


def test_explore_outputs_shapes_and_per_explorer_results(setup):
  """[explorers]-leading outputs; explorers with other data explore differently."""
  params0, _, _, _, out = setup
  assert out.final_loss.shape == (3,) and out.epochs_run.shape == (3,)
  for leaf, p in zip(jax.tree.leaves(out.sqdev), jax.tree.leaves(params0)):
    assert leaf.shape == (3,) + p.shape
  w = np.asarray(out.sqdev['dense0']['kernel'])
  assert not np.allclose(w[0], w[1])


@pytest.mark.parametrize('chunk', [1, 2])
def test_explore_in_chunks_equals_one_vmap(setup, chunk):
  """One explorer at a time (each stopping early on its own) or chunks of 2 (a remainder of 1):
  the same deviations, losses and epochs as all explorers in one vmap."""
  params0, data, client_ids, rng, out = setup
  got = exploration.make_explore_fn(apply_fn, clients_per_chunk=chunk, **KW)(
      params0, data, client_ids, rng)
  # Float rounding only: a CPU's native convolution sums in another order unbatched than
  # vmapped (a grouped convolution), and 5 epochs of Adam at 0.2 amplify it a little.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3), got.sqdev,
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


# --- a linear model, by hand ------------------------------------------------------------------
#
# logits = x @ w + b. An explorer whose examples fit in one batch takes one full-batch SGD step an
# epoch, whatever the shuffle: theta_{e+1} = theta_e - lr * g(theta_e), g computed in NumPy.


def _lin_params0():
  return {'w': jnp.asarray(LIN_W), 'b': jnp.asarray(LIN_B)}


@pytest.mark.parametrize('trajectory', [False, True])
def test_explore_hand_computed(trajectory):
  """Two explorers (4 and 3 examples, one batch each), SGD lr 0.5, two epochs, no early stop:
  sqdev = (theta_2 - theta_0)^2, or with `trajectory` (theta_1 - theta_0)^2 + (theta_2 -
  theta_0)^2; final_loss is the second epoch's loss, i.e. at theta_1; epochs_run is 2."""
  lr = 0.5
  examples, data = _lin_clients([4, 3], steps=1, batch=4, seed=0)
  explore = exploration.make_explore_fn(linear_apply, optimizer='sgd', learning_rate=lr,
                                        epochs=2, patience=0, trajectory=trajectory)
  out = explore(_lin_params0(), data, jnp.array([5, 2], jnp.int32), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out.epochs_run, [2, 2])
  for k, (x, y) in enumerate(examples):
    gw0, gb0, _ = _np_grad_and_loss(LIN_W, LIN_B, x, y)
    w1, b1 = LIN_W - lr * gw0, LIN_B - lr * gb0
    gw1, gb1, loss1 = _np_grad_and_loss(w1, b1, x, y)
    w2, b2 = w1 - lr * gw1, b1 - lr * gb1
    want_w, want_b = (w2 - LIN_W) ** 2, (b2 - LIN_B) ** 2
    if trajectory:
      want_w, want_b = want_w + (w1 - LIN_W) ** 2, want_b + (b1 - LIN_B) ** 2
    np.testing.assert_allclose(out.sqdev['w'][k], want_w, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out.sqdev['b'][k], want_b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out.final_loss[k], loss1, rtol=1e-5)
  assert np.min(np.asarray(out.sqdev['w'])) > 1e-6


def test_explore_key_depends_on_client_id_not_position():
  """An explorer's shuffles are fixed by (rng, client id): 12 examples in 3 batches of 4 (the
  order of SGD steps matters). The same call twice is identical; swapping two explorers' places
  (data and id together) swaps their results; the same data under another id, or another rng,
  explores differently."""
  _, data = _lin_clients([12, 12], steps=3, batch=4, seed=1)
  explore = exploration.make_explore_fn(linear_apply, optimizer='sgd', learning_rate=0.5,
                                        epochs=1, patience=0)
  params0, rng = _lin_params0(), jax.random.PRNGKey(3)
  dev = lambda ids, idx, r=rng: np.asarray(explore(
      params0, jax.tree.map(lambda a: a[np.asarray(idx)], data), jnp.asarray(ids, jnp.int32),
      r).sqdev['w'])
  base = dev([4, 9], [0, 1])
  np.testing.assert_array_equal(dev([4, 9], [0, 1]), base)
  np.testing.assert_allclose(dev([9, 4], [1, 0]), base[::-1], atol=1e-7, rtol=0)
  same_data = dev([4, 9], [0, 0])
  np.testing.assert_allclose(same_data[0], base[0], atol=1e-7, rtol=0)
  assert np.max(np.abs(same_data[1] - same_data[0])) > 1e-5
  assert np.max(np.abs(dev([4, 9], [0, 1], jax.random.PRNGKey(4)) - base)) > 1e-5


def test_exploration_optimizer_overrides_the_clients_one(setup):
  """`exploration_optimizer` / `exploration_learning_rate` set: AutoFLIP's explorers train with
  them (SGD here, the clients Adam); unset ('' / 0): with the clients' optimizer, the paper's."""
  params0, data, client_ids, rng, out = setup
  config = tiny_config(optimizer='adam', learning_rate=KW['learning_rate'], e_exp=KW['epochs'],
                       patience=KW['patience'])
  same = autoflip.explore_fn(config, apply_fn, 0)(params0, data, client_ids, rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), same.sqdev, out.sqdev)
  config.exploration_optimizer, config.exploration_learning_rate = 'sgd', 0.05
  got = autoflip.explore_fn(config, apply_fn, 0)(params0, data, client_ids, rng)
  want = exploration.make_explore_fn(apply_fn, **dict(KW, optimizer='sgd', learning_rate=0.05))(
      params0, data, client_ids, rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got.sqdev, want.sqdev)
  assert not np.allclose(got.sqdev['dense0']['kernel'], out.sqdev['dense0']['kernel'])
