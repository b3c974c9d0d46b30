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


def test_padding_invariance_multi_step(params):
  """n > batch over two epochs: the result does not depend on the number of steps, on where the
  real examples sit, or on padding values.

  The six real examples are identical, so the shuffle cannot matter and no knowledge of the
  shuffle's keys is needed: each epoch must take ceil(6 / 4) = 2 Adam steps, on 4 and then 2
  examples, in both layouts. (A layout where the scattered valid slots were not gathered first
  would take 4 non-empty steps an epoch and end elsewhere.)
  """
  x, y = _examples(1, seed=2)
  x, y = np.repeat(x, 6, 0), np.repeat(y, 6, 0)
  key = jax.random.PRNGKey(11)
  train = _train_fn('adam', epochs=2)
  short = train(params, ones_mask(params), _pack(x, y, np.arange(6), steps=2), key,
                learning_rate=1e-2)
  long = train(params, ones_mask(params), _pack(x, y, [1, 3, 6, 8, 13, 15], steps=4, seed=9),
               key, learning_rate=1e-2)
  _assert_trees_close(short.params, long.params, atol=1e-6)
  np.testing.assert_allclose(short.loss, long.loss, atol=1e-6)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(short.params), jax.tree.leaves(params))) > 1e-3


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


# --- a linear model, trained by hand ---------------------------------------------------------
#
# logits = x @ w + b, softmax cross-entropy. The mean loss's gradient over n examples, computed in
# NumPy (float64): dlogits = (softmax(logits) - onehot(y)) / n, dw = x^T dlogits, db = sum dlogits.

LIN_W = np.array([[0.1, -0.1, 0.6], [0.1, -0.5, 0.4], [1.3, 0.9, -0.7]], np.float32)
LIN_B = np.array([0.1, -0.2, 0.3], np.float32)
LIN_X = np.array([[-1.3, -0.6, 0.0], [-2.3, -0.2, -1.2], [-0.7, -0.5, -0.3], [0.4, 1.0, -0.1]],
                 np.float32)
LIN_Y = np.array([0, 2, 1, 2], np.int32)
# Keeps 6 of the 9 weights and 2 of the 3 biases.
LIN_MASK = {'w': np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], bool), 'b': np.array([1, 1, 0], bool)}


def linear_apply(p, x):
  return x @ p['w'] + p['b']


def _lin_params():
  return {'w': jnp.asarray(LIN_W), 'b': jnp.asarray(LIN_B)}


def _lin_data():
  """All four examples in one full batch: one step an epoch, whatever the shuffle."""
  return local.ClientData(jnp.asarray(LIN_X[None]), jnp.asarray(LIN_Y[None]),
                          jnp.ones((1, 4), bool))


def _np_grad(w, b, x, y):
  w, b, x = (np.asarray(a, np.float64) for a in (w, b, x))
  z = x @ w + b
  z -= z.max(axis=1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  d = p.copy()
  d[np.arange(len(y)), y] -= 1.0
  d /= len(y)
  return x.T @ d, d.sum(axis=0)


def _np_loss(w, b, x, y):
  z = np.asarray(x, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
  logp = z - z.max(axis=1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
  return -np.mean(logp[np.arange(len(y)), y])


def _lin_train(optimizer, lr, mask=None, **kw):
  params = _lin_params()
  mask = mask if mask is not None else ones_mask(params)
  return local.train(params, mask, _lin_data(), jax.random.PRNGKey(0), apply_fn=linear_apply,
                     optimizer=optimizer, learning_rate=lr, **kw)


def test_sgd_step_hand_computed():
  """'sgd', one step: theta - lr * g, with g the hand-computed gradient of the mean loss."""
  lr = 0.1
  gw, gb = _np_grad(LIN_W, LIN_B, LIN_X, LIN_Y)
  out = _lin_train('sgd', lr, epochs=1)
  np.testing.assert_allclose(out.params['w'], LIN_W - lr * gw, atol=1e-6, rtol=0)
  np.testing.assert_allclose(out.params['b'], LIN_B - lr * gb, atol=1e-6, rtol=0)
  np.testing.assert_allclose(out.loss, _np_loss(LIN_W, LIN_B, LIN_X, LIN_Y), rtol=1e-5)
  assert int(out.epochs_run) == 1


def test_adam_first_step_hand_computed():
  """'adam', one step: the bias-corrected moments are m = g and v = g^2, so the update is
  -lr * g / (|g| + 1e-8), i.e. every weight moves by lr against its gradient's sign, whatever
  the gradient's size (unlike SGD: the gradients here range from 0.004 to 0.2)."""
  lr = 0.1
  gw, gb = _np_grad(LIN_W, LIN_B, LIN_X, LIN_Y)
  assert np.all(np.abs(gw) > 1e-3) and np.all(np.abs(gb) > 1e-3)
  out = _lin_train('adam', lr, epochs=1)
  np.testing.assert_allclose(out.params['w'], LIN_W - lr * gw / (np.abs(gw) + 1e-8), atol=1e-5,
                             rtol=0)
  np.testing.assert_allclose(out.params['b'], LIN_B - lr * gb / (np.abs(gb) + 1e-8), atol=1e-5,
                             rtol=0)
  np.testing.assert_allclose(np.abs(out.params['w'] - LIN_W), lr, atol=1e-5)


def test_adam_second_step_hand_computed():
  """'adam', two epochs of one step: m = .1 * .9 g1 + .1 g2, v = .001 * .999 g1^2 + .001 g2^2,
  bias-corrected by 1 - .9^2 and 1 - .999^2 (g2 taken at the params after the first step)."""
  lr = 0.1
  gw1, gb1 = _np_grad(LIN_W, LIN_B, LIN_X, LIN_Y)
  w1, b1 = LIN_W - lr * np.sign(gw1), LIN_B - lr * np.sign(gb1)
  gw2, gb2 = _np_grad(w1, b1, LIN_X, LIN_Y)

  def second(theta, g1, g2):
    m = (0.9 * 0.1 * g1 + 0.1 * g2) / (1 - 0.9 ** 2)
    v = (0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2) / (1 - 0.999 ** 2)
    return theta - lr * m / (np.sqrt(v) + 1e-8)

  out = _lin_train('adam', lr, epochs=2)
  np.testing.assert_allclose(out.params['w'], second(w1, gw1, gw2), atol=1e-5, rtol=0)
  np.testing.assert_allclose(out.params['b'], second(b1, gb1, gb2), atol=1e-5, rtol=0)
  np.testing.assert_allclose(out.last_loss, _np_loss(w1, b1, LIN_X, LIN_Y), rtol=1e-5)


def _add_constant(c):
  """A transformation that adds `c` to every update: it would move pruned weights too."""
  return optax.GradientTransformation(
      lambda params: optax.EmptyState(),
      lambda updates, state, params=None: (jax.tree.map(lambda u: u + c, updates), state))


def test_pruned_weights_zero_under_an_optimizer_that_moves_them(monkeypatch):
  """The mask is re-applied after every optimizer step: with an optimizer whose update is
  non-zero for zero gradients (SGD plus a constant 0.1), pruned weights still end exactly 0, and
  kept ones are theta - lr * g + 0.1 (g the gradient at the masked params)."""
  lr = 0.1
  monkeypatch.setattr(local, 'make_optimizer',
                      lambda name, learning_rate: optax.chain(optax.sgd(learning_rate),
                                                              _add_constant(0.1)))
  mask = {k: jnp.asarray(v) for k, v in LIN_MASK.items()}
  out = _lin_train('sgd', lr, mask=mask, epochs=1)
  w0, b0 = LIN_W * LIN_MASK['w'], LIN_B * LIN_MASK['b']
  gw, gb = _np_grad(w0, b0, LIN_X, LIN_Y)
  want_w = np.where(LIN_MASK['w'], w0 - lr * gw + 0.1, 0.0)
  want_b = np.where(LIN_MASK['b'], b0 - lr * gb + 0.1, 0.0)
  np.testing.assert_array_equal(np.asarray(out.params['w'])[~LIN_MASK['w']], 0.0)
  np.testing.assert_array_equal(np.asarray(out.params['b'])[~LIN_MASK['b']], 0.0)
  np.testing.assert_allclose(out.params['w'], want_w, atol=1e-6, rtol=0)
  np.testing.assert_allclose(out.params['b'], want_b, atol=1e-6, rtol=0)


def test_grad_sq_covers_pruned_weights():
  """PruneFL's importance: the squared DENSE gradient at the masked point, for pruned weights
  too, so they can regrow; with lr 0 and one step it is exactly g^2, g computed by hand."""
  mask = {k: jnp.asarray(v) for k, v in LIN_MASK.items()}
  out = _lin_train('sgd', 0.0, mask=mask, epochs=1, track_grad_sq=True)
  gw, gb = _np_grad(LIN_W * LIN_MASK['w'], LIN_B * LIN_MASK['b'], LIN_X, LIN_Y)
  np.testing.assert_allclose(out.grad_sq['w'], gw ** 2, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(out.grad_sq['b'], gb ** 2, rtol=1e-5, atol=1e-9)
  assert np.all(np.asarray(out.grad_sq['w'])[~LIN_MASK['w']] > 1e-6)
  # Two epochs of one step each: the sum of both steps' squares (the params do not move).
  out = _lin_train('sgd', 0.0, mask=mask, epochs=2, track_grad_sq=True)
  np.testing.assert_allclose(out.grad_sq['w'], 2 * gw ** 2, rtol=1e-5, atol=1e-9)
