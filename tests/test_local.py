"""Tests for autoflip_jax.local: one client's masked local training."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoflip_jax import local
from autoflip_jax.masks import ones_mask
from autoflip_jax.models.cnn import CNN

MODEL = CNN(num_classes=3, channels=(4, 8), hidden=16)
BATCH = 4


def apply_fn(p, x):
  return MODEL.apply({'params': p}, x)


@pytest.fixture(scope='module')
def params():
  return jax.jit(MODEL.init)(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))['params']


def _examples(n, seed=1):
  rx, ry = np.random.default_rng(seed), np.random.default_rng(seed + 100)
  return rx.normal(size=(n, 12, 12, 1)).astype(np.float32), ry.integers(0, 3, n).astype(np.int32)


def _pack(x, y, slots, steps, seed=7):
  """Real examples at the given flat slots; every other slot holds large garbage, marked invalid."""
  rng = np.random.default_rng(seed)
  total = steps * BATCH
  xf = (rng.normal(size=(total, 12, 12, 1)) * 50.0).astype(np.float32)
  yf = rng.integers(0, 3, total).astype(np.int32)
  vf = np.zeros(total, bool)
  xf[slots], yf[slots], vf[slots] = x, y, True
  return local.ClientData(jnp.asarray(xf.reshape(steps, BATCH, 12, 12, 1)),
                          jnp.asarray(yf.reshape(steps, BATCH)),
                          jnp.asarray(vf.reshape(steps, BATCH)))


@functools.lru_cache(maxsize=None)
def _train_fn(optimizer='adam', epochs=1, patience=0, track_deviation=False):
  return jax.jit(functools.partial(local.train, apply_fn=apply_fn, optimizer=optimizer,
                                   epochs=epochs, patience=patience,
                                   track_deviation=track_deviation))


def _assert_trees_close(a, b, atol):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=atol, rtol=0), a, b)


def test_padding_invariance_single_step_many_epochs(params):
  """n <= batch: every epoch is one real step; the empty steps of a longer layout are no-ops.

  Adam would move the params on an empty step (its moments are non-zero after the first), so this
  also checks that empty steps leave the optimizer state alone.
  """
  x, y = _examples(3)
  key = jax.random.PRNGKey(3)
  train = _train_fn('adam', epochs=2)
  short = train(params, ones_mask(params), _pack(x, y, [0, 1, 2], steps=1), key,
                learning_rate=1e-2)
  long = train(params, ones_mask(params), _pack(x, y, [6, 2, 5], steps=2, seed=8), key,
               learning_rate=1e-2)
  _assert_trees_close(short.params, long.params, atol=1e-6)
  np.testing.assert_allclose(short.loss, long.loss, atol=1e-6)
  np.testing.assert_allclose(short.last_loss, long.last_loss, atol=1e-6)
  assert int(short.epochs_run) == int(long.epochs_run) == 2
  # And training did something.
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
              zip(jax.tree.leaves(short.params), jax.tree.leaves(params)))
  assert moved > 1e-3


def test_padding_invariance_multi_step_same_example_sequence(params):
  """n > batch, one epoch: when the shuffle yields the same sequence of real examples, the result
  does not depend on the number of steps, on where the real examples sit, or on padding values.

  The shuffle draws one uniform per slot, so it depends on the layout; we place the examples in
  the long layout so that its valid-first order visits them in the short layout's order.
  """
  n, key = 6, jax.random.PRNGKey(11)
  x, y = _examples(n, seed=2)
  epoch_key = jax.random.fold_in(key, 0)
  short_valid = np.zeros(2 * BATCH, bool)
  short_valid[:n] = True
  seq = np.asarray(local.epoch_order(epoch_key, jnp.asarray(short_valid)))[:n]  # example ids
  long_valid = np.zeros(4 * BATCH, bool)
  long_valid[[1, 3, 6, 8, 13, 15]] = True
  slots = np.asarray(local.epoch_order(epoch_key, jnp.asarray(long_valid)))[:n]
  assert set(slots) == {1, 3, 6, 8, 13, 15}
  # Slot slots[j] is visited j-th: it must hold example seq[j].
  train = _train_fn('adam', epochs=1)
  short = train(params, ones_mask(params), _pack(x, y, np.arange(n), steps=2), key,
                learning_rate=1e-2)
  long = train(params, ones_mask(params), _pack(x[seq], y[seq], slots, steps=4, seed=9), key,
               learning_rate=1e-2)
  _assert_trees_close(short.params, long.params, atol=1e-6)
  np.testing.assert_allclose(short.loss, long.loss, atol=1e-6)


def _single_step_client():
  x, y = _examples(3)
  return _pack(x, y, [0, 1, 2], steps=1)


def test_out_of_range_labels_in_padding_are_ignored(params):
  data = _single_step_client()
  train, key = _train_fn('adam', epochs=2), jax.random.PRNGKey(3)
  base = train(params, ones_mask(params), data, key, learning_rate=1e-2)
  for label in (-1, 99):  # e.g. an 'ignore' label in the padded slot
    out = train(params, ones_mask(params), data._replace(y=data.y.at[0, 3].set(label)), key,
                learning_rate=1e-2)
    jax.tree.map(np.testing.assert_array_equal, out.params, base.params)
    assert float(out.loss) == float(base.loss)


def test_non_finite_padding_is_ignored(params):
  data = _single_step_client()
  train, key = _train_fn('adam', epochs=2), jax.random.PRNGKey(3)
  base = train(params, ones_mask(params), data, key, learning_rate=1e-2)
  assert not bool(data.valid[0, 3])
  out = train(params, ones_mask(params), data._replace(x=data.x.at[0, 3].set(jnp.nan)), key,
              learning_rate=1e-2)
  assert np.isfinite(float(out.loss))
  _assert_trees_close(out.params, base.params, atol=1e-6)


def test_client_without_examples_is_unchanged(params):
  x, y = _examples(2)
  data = _pack(x[:0], y[:0], [], steps=2)
  out = _train_fn('adam', epochs=2)(params, ones_mask(params), data, jax.random.PRNGKey(0),
                                     learning_rate=1e-2)
  jax.tree.map(np.testing.assert_array_equal, out.params, params)
  assert float(out.loss) == 0.0 and float(out.last_loss) == 0.0
  assert int(out.epochs_run) == 2


def test_loss_is_example_weighted_mean(params):
  """With lr 0, `loss` is the mean cross-entropy over the 5 real examples (not a mean of the two
  steps' means, 4 + 1 examples)."""
  x, y = _examples(5, seed=4)
  out = _train_fn('adam', epochs=2)(params, ones_mask(params), _pack(x, y, np.arange(5), steps=2),
                                     jax.random.PRNGKey(0), learning_rate=0.0)
  per_example = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
      apply_fn(params, jnp.asarray(x)), jnp.asarray(y)))
  np.testing.assert_allclose(out.loss, per_example.mean(), rtol=1e-5)
  np.testing.assert_allclose(out.last_loss, per_example.mean(), rtol=1e-5)
  assert abs(per_example.mean() - (per_example[:4].mean() + per_example[4]) / 2) > 1e-4
  jax.tree.map(np.testing.assert_array_equal, out.params, params)


def test_masked_training_keeps_pruned_weights_exactly_zero(params):
  keys = jax.random.split(jax.random.PRNGKey(5), len(jax.tree.leaves(params)))
  mask = jax.tree.unflatten(
      jax.tree.structure(params),
      [jax.random.bernoulli(k, 0.6, p.shape) for k, p in zip(keys, jax.tree.leaves(params))])
  x, y = _examples(7, seed=3)
  out = _train_fn('adam', epochs=2)(params, mask, _pack(x, y, np.arange(7), steps=2),
                                     jax.random.PRNGKey(1), learning_rate=1e-2)
  kept_moved, kept_total = 0, 0
  for p0, p1, m in zip(jax.tree.leaves(params), jax.tree.leaves(out.params),
                       jax.tree.leaves(mask)):
    p0, p1, m = np.asarray(p0), np.asarray(p1), np.asarray(m)
    assert (~m).any() and m.any()
    np.testing.assert_array_equal(p1[~m], 0.0)
    kept_moved += int(np.sum(p1[m] != p0[m]))
    kept_total += int(m.sum())
  # Adam moves (almost) every kept weight with a non-zero gradient.
  assert kept_moved > 0.5 * kept_total, (kept_moved, kept_total)


def test_early_stopping_counts_epochs(params):
  # Identical examples: every epoch's loss is bit-identical whatever the shuffle, and with lr 0 it
  # never improves after the first epoch.
  x, y = _examples(1)
  x, y = np.repeat(x, 6, 0), np.repeat(y, 6, 0)
  data = _pack(x, y, np.arange(6), steps=2)
  mask = ones_mask(params)
  for patience, want in ((1, 2), (3, 4), (0, 10)):
    out = _train_fn('adam', epochs=10, patience=patience)(params, mask, data,
                                                          jax.random.PRNGKey(0),
                                                          learning_rate=0.0)
    assert int(out.epochs_run) == want, patience
    jax.tree.map(np.testing.assert_array_equal, out.params, params)


def test_epoch_order_valid_first_permutation():
  valid = jnp.array([False, True, True, False, True, False, False, True, True, False])
  valid_idx = {1, 2, 4, 7, 8}
  firsts = set()
  for seed in range(6):
    order = np.asarray(local.epoch_order(jax.random.PRNGKey(seed), valid))
    assert sorted(order.tolist()) == list(range(10))
    assert set(order[:5].tolist()) == valid_idx
    assert not set(order[5:].tolist()) & valid_idx
    firsts.add(tuple(order[:5].tolist()))
  assert len(firsts) > 1  # it does shuffle


def test_make_optimizer():
  assert isinstance(local.make_optimizer('adam', 1e-3), optax.GradientTransformation)
  assert isinstance(local.make_optimizer('sgd', 1e-3), optax.GradientTransformation)
  with pytest.raises(ValueError, match='config.optimizer'):
    local.make_optimizer('bogus', 1e-3)


def test_grad_sq_covers_pruned_weights(params):
  """PruneFL's importance: the squared gradient at the masked point, for pruned weights too, so
  they can regrow; with lr 0 and one step it is exactly the dense gradient squared."""
  data = _single_step_client()
  mask = jax.tree.map(lambda p: np.arange(p.size).reshape(p.shape) % 3 != 0, params)
  train = jax.jit(functools.partial(local.train, apply_fn=apply_fn, optimizer='sgd', epochs=1,
                                    track_grad_sq=True))
  out = train(params, mask, data, jax.random.PRNGKey(0), learning_rate=0.0)
  masked_params = jax.tree.map(lambda p, m: np.where(m, p, 0.0), params, mask)
  v = data.valid[0]
  grads = jax.grad(lambda p: local.cross_entropy(apply_fn, p, data.x[0], data.y[0], v)[0]
                   / jnp.sum(v))(masked_params)
  _assert_trees_close(out.grad_sq, jax.tree.map(jnp.square, grads), atol=1e-6)
  kernel_gsq, kernel_mask = out.grad_sq['conv0']['kernel'], mask['conv0']['kernel']
  assert float(jnp.sum(kernel_gsq[~kernel_mask])) > 0
