"""Tests for autoflip_jax.federated: masked FedAvg and the one-program federated round."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import federated, local, masks
from autoflip_jax.models.cnn import CNN
from tests.linear_oracle import LIN_B, LIN_MASK, LIN_W, linear_apply
from tests.linear_oracle import lin_clients as _lin_clients
from tests.linear_oracle import np_grad_and_loss as _np_grad_and_loss

MODEL = CNN(num_classes=3, channels=(4, 8), hidden=16)
UNITS = MODEL.units()
BATCH, STEPS, EPOCHS = 4, 2, 2
NS = np.array([5, 0, 2, 7], np.int32)  # uneven clients, one empty, all padded to 2 x 4 slots


def apply_fn(p, x):
  return MODEL.apply({'params': p}, x)


ROUND = federated.make_round_fn(apply_fn, optimizer='adam', local_epochs=EPOCHS)


def _copy(tree):
  return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def _np(tree):
  return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def _client_data(ns, seed=0):
  rng = np.random.default_rng(seed)
  k = len(ns)
  x = rng.normal(size=(k, STEPS * BATCH, 12, 12, 1)).astype(np.float32)
  y = rng.integers(0, 3, (k, STEPS * BATCH)).astype(np.int32)
  valid = np.arange(STEPS * BATCH)[None] < np.asarray(ns)[:, None]
  x[~valid], y[~valid] = 0.0, 0
  return local.ClientData(jnp.asarray(x.reshape(k, STEPS, BATCH, 12, 12, 1)),
                          jnp.asarray(y.reshape(k, STEPS, BATCH)),
                          jnp.asarray(valid.reshape(k, STEPS, BATCH)))


@pytest.fixture(scope='module')
def params():
  return _np(jax.jit(MODEL.init)(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))['params'])


@pytest.fixture(scope='module')
def guidance(params):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(123), len(leaves))
  return masks.normalize(jax.tree.unflatten(
      tree, [jax.random.uniform(k, p.shape) ** 2 for k, p in zip(keys, leaves)]))


@pytest.fixture(scope='module')
def mask(guidance):
  m = _np(masks.hybrid_mask(guidance, 0.4, UNITS, structured_tp=0.25))
  # Non-trivial: weights and whole units pruned, yet much of the model kept.
  kept = np.mean(np.concatenate([a.ravel() for a in jax.tree.leaves(m)]))
  assert 0.3 < kept < 0.8
  counts = masks.unit_counts(m, UNITS)
  assert counts['conv0'][0] < 4 and counts['dense0'][0] < 16, counts
  return m


def _state(params, mask, round_=0):
  return federated.ServerState(_copy(params), _copy(mask), jnp.asarray(round_, jnp.int32))


# --- fedavg -----------------------------------------------------------------------------------

def test_fedavg_hand_computed():
  client_params = {'w': jnp.array([[1.0, 2.0], [5.0, 6.0]]), 'b': jnp.array([[1.0], [3.0]])}
  mask = {'w': jnp.array([True, False]), 'b': jnp.array([True])}
  fallback = {'w': jnp.array([-1.0, -2.0]), 'b': jnp.array([-3.0])}
  out = federated.fedavg(client_params, jnp.array([1, 3]), mask, fallback)
  # Weights 1/4, 3/4: w[0] = .25 * 1 + .75 * 5 = 4; w[1] is masked; b = .25 + 2.25 = 2.5.
  np.testing.assert_allclose(out['w'], [4.0, 0.0])
  np.testing.assert_allclose(out['b'], [2.5])
  assert float(out['w'][1]) == 0.0
  # A client of weight 0 does not count.
  out = federated.fedavg({'w': jnp.array([[1.0, 2.0], [5.0, 6.0], [100.0, 100.0]]),
                          'b': jnp.array([[1.0], [3.0], [100.0]])},
                         jnp.array([1, 3, 0]), mask, fallback)
  np.testing.assert_allclose(out['w'], [4.0, 0.0])
  # No examples at all: the fallback, masked.
  out = federated.fedavg(client_params, jnp.array([0, 0]), mask, fallback)
  np.testing.assert_array_equal(out['w'], [-1.0, 0.0])
  np.testing.assert_array_equal(out['b'], [-3.0])


# --- the round --------------------------------------------------------------------------------

def test_round_is_the_weighted_average_of_its_clients_alone(params, mask):
  """The cohort's model is mask * sum_k n_k / sum_j n_j theta_k, where theta_k is the model client
  k gives alone in the same round (a cohort of one, whose global model is its own), for the CNN,
  Adam, two local epochs and an empty client; the metrics are the clients' alone, weighted."""
  data = _client_data(NS)
  ids = np.array([3, 7, 1, 12], np.int32)
  rng, lr, start_round = jax.random.PRNGKey(5), jnp.float32(1e-2), 2
  state, metrics = ROUND(_state(params, mask, start_round), data, jnp.asarray(NS),
                         jnp.asarray(ids), rng, lr, None)
  alone_params, alone_loss = [], []
  for k in range(4):
    s, m = ROUND(_state(params, mask, start_round), jax.tree.map(lambda a: a[k:k + 1], data),
                 jnp.asarray(NS[k:k + 1]), jnp.asarray(ids[k:k + 1]), rng, lr, None)
    alone_params.append(_np(s.params))
    alone_loss.append(float(m.client_loss[0]))
  w = NS / NS.sum()  # [5, 0, 2, 7] / 14
  want = jax.tree.map(
      lambda m, *ps: np.where(m, sum(wk * p for wk, p in zip(w, ps)), 0.0),
      mask, *alone_params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), state.params,
               want)
  np.testing.assert_allclose(metrics.client_loss, alone_loss, rtol=1e-5)
  assert alone_loss[1] == 0.0 and all(l > 0 for i, l in enumerate(alone_loss) if i != 1)
  np.testing.assert_allclose(metrics.train_loss, np.sum(w * np.array(alone_loss)), rtol=1e-5)
  assert int(metrics.num_examples) == 14
  assert int(state.round) == start_round + 1
  jax.tree.map(np.testing.assert_array_equal, state.mask, mask)
  # The clients moved, each differently (so the average above is not of equal models).
  start = _np(masks.apply_mask(params, mask))
  kernel = lambda t: t['dense0']['kernel']
  assert np.max(np.abs(kernel(state.params) - kernel(start))) > 1e-3
  assert np.max(np.abs(kernel(alone_params[0]) - kernel(alone_params[2]))) > 1e-3
  jax.tree.map(np.testing.assert_array_equal, alone_params[1], start)  # the empty client
  # A client's result depends on its id, not its position in the cohort: reversing the cohort
  # gives the same global model.
  rev = lambda a: a[::-1]
  state2, _ = ROUND(_state(params, mask, start_round), jax.tree.map(rev, data),
                    jnp.asarray(NS[::-1]), jnp.asarray(ids[::-1]), rng, lr, None)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), state2.params,
               state.params)


def test_round_without_examples_keeps_model(params, mask):
  data = _client_data([0, 0, 0, 0])
  state, metrics = ROUND(_state(params, mask), data, jnp.zeros(4, jnp.int32),
                         jnp.arange(4, dtype=jnp.int32), jax.random.PRNGKey(0), jnp.float32(1e-2),
                         None)
  jax.tree.map(np.testing.assert_array_equal, state.params, masks.apply_mask(params, mask))
  assert float(metrics.train_loss) == 0.0 and int(metrics.num_examples) == 0
  assert int(state.round) == 1


@pytest.fixture(scope='module')
def three_rounds(params, mask):
  """Three rounds of one traced-once round function, with new lr and cohort each round."""
  round_fn = federated.make_round_fn(apply_fn, optimizer='adam', local_epochs=1,
                                     wrap=chex.assert_max_traces(n=1))
  state = _state(params, mask)
  snapshots = []
  for r, (lr, ids) in enumerate([(1e-2, [0, 1, 2, 3]), (5e-3, [4, 2, 9, 6]),
                                 (2e-3, [11, 5, 8, 1])]):
    data = _client_data(NS[[r, (r + 1) % 4, (r + 2) % 4, (r + 3) % 4]], seed=r)
    ns = jnp.asarray(np.asarray(data.valid).sum(axis=(1, 2)), jnp.int32)
    state, metrics = round_fn(state, data, ns, jnp.asarray(ids, jnp.int32),
                              jax.random.PRNGKey(9), lr, None)
    snapshots.append((_np(state), float(metrics.train_loss)))
  return snapshots


def test_round_traces_once(three_rounds):
  # Reaching here means no retrace across lr values, cohorts, data and the returned state.
  assert [int(s.round) for s, _ in three_rounds] == [1, 2, 3]
  assert all(np.isfinite(loss) and loss > 0 for _, loss in three_rounds)


def test_pruned_weights_stay_zero_across_rounds(params, mask, three_rounds):
  start = _np(masks.apply_mask(params, mask))
  for state, _ in three_rounds:
    jax.tree.map(np.testing.assert_array_equal, state.mask, mask)
    for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mask)):
      np.testing.assert_array_equal(p[~m], 0.0)
  # Kept weights changed from the start, and again between rounds.
  previous = start
  for state, _ in three_rounds:
    changed = sum(int(np.sum((a != b) & m)) for a, b, m in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(previous), jax.tree.leaves(mask)))
    kept = sum(int(m.sum()) for m in jax.tree.leaves(mask))
    assert changed > 0.5 * kept
    previous = state.params


def test_mask_fn_mask_is_applied(params, mask, guidance):
  """The per-round mask path: the mask is rebuilt in the round from `aux` (here the guidance)."""
  mask_fn = lambda aux, client_ids, num_examples: masks.hybrid_mask(
      aux, 0.4, UNITS, structured_tp=0.25)
  round_fn = federated.make_round_fn(apply_fn, optimizer='adam', local_epochs=EPOCHS,
                                     mask_fn=mask_fn)
  data = _client_data(NS, seed=3)
  ids = jnp.array([3, 7, 1, 12], jnp.int32)
  ones = masks.ones_mask(params)
  state, _ = round_fn(_state(params, ones), data, jnp.asarray(NS), ids, jax.random.PRNGKey(5),
                      jnp.float32(1e-2), guidance)
  jax.tree.map(np.testing.assert_array_equal, state.mask, mask)
  for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(mask)):
    np.testing.assert_array_equal(np.asarray(p)[~m], 0.0)
  # Same result as the round without mask_fn run from a state that already holds that mask.
  want, _ = ROUND(_state(params, mask), data, jnp.asarray(NS), ids, jax.random.PRNGKey(5),
                  jnp.float32(1e-2), None)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), state.params,
               want.params)


@pytest.mark.parametrize('chunk', [1, 2])
def test_chunked_cohort_equals_one_vmap(params, mask, chunk):
  """Training the cohort in chunks (scan over chunks, vmap inside) changes nothing but memory."""
  data, n = _client_data(NS, seed=5), jnp.asarray(NS)
  ids, key, lr = jnp.array([3, 0, 7, 2]), jax.random.PRNGKey(0), jnp.float32(0.01)
  outs = []
  for k in (0, chunk):
    fn = federated.make_round_fn(apply_fn, optimizer='adam', local_epochs=1, clients_per_chunk=k)
    outs.append(fn(_state(params, mask), data, n, ids, key, lr, None))
  (s0, m0), (s1, m1) = outs
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), s0.params, s1.params)
  np.testing.assert_allclose(m0.client_loss, m1.client_loss, rtol=1e-6)


def test_resolve_chunk_per_backend():
  """0 is auto: one client at a time on a CPU without a mesh, the whole cohort otherwise."""
  cpu = jax.default_backend() == 'cpu'
  assert federated.resolve_chunk(0) == (1 if cpu else 0)
  assert federated.resolve_chunk(0, mesh_devices=8) == 0
  assert federated.resolve_chunk(0, vmap_on_cpu=True) == 0  # the LSTM: vmapped on a CPU too
  assert federated.resolve_chunk(4) == 4 and federated.resolve_chunk(1, mesh_devices=8) == 1


# --- a linear model, by hand ------------------------------------------------------------------
#
# logits = x @ w + b. With one step of SGD on one batch holding all of a client's examples, the
# client's model is theta_k = theta - lr * mask * g_k (the shuffle cannot matter), with g_k the
# gradient of its mean softmax cross-entropy at the masked global model, computed in NumPy.


def _lin_state(mask, round_=0):
  return federated.ServerState({'w': jnp.asarray(LIN_W), 'b': jnp.asarray(LIN_B)},
                               jax.tree.map(jnp.asarray, mask), jnp.asarray(round_, jnp.int32))


@pytest.mark.parametrize('chunk', [0, 1, 2])
def test_round_hand_computed(chunk):
  """One SGD step per client (one batch holds all its examples): the new global model is
  mask * sum_k n_k / sum_j n_j (theta_m - lr * mask * g_k), theta_m = mask * theta, with unequal
  n_k, pruned weights that are non-zero in the incoming state, and an empty client (garbage data)
  of weight 0. The same whether the cohort is one vmap (0), one client at a time (1) or chunks
  of two (2)."""
  ns = np.array([4, 0, 1, 3], np.int32)
  lr = 0.5
  examples, data = _lin_clients(ns, steps=1, batch=4, seed=0)
  wm, bm = LIN_W * LIN_MASK['w'], LIN_B * LIN_MASK['b']
  want_w, want_b, losses = np.zeros((3, 3)), np.zeros(3), np.zeros(4)
  for k, (x, y) in enumerate(examples):
    if ns[k] == 0:
      continue
    gw, gb, losses[k] = _np_grad_and_loss(wm, bm, x, y)
    want_w += ns[k] / 8 * (wm - lr * LIN_MASK['w'] * gw)
    want_b += ns[k] / 8 * (bm - lr * LIN_MASK['b'] * gb)
  want_w, want_b = want_w * LIN_MASK['w'], want_b * LIN_MASK['b']
  round_fn = federated.make_round_fn(linear_apply, optimizer='sgd', local_epochs=1,
                                     clients_per_chunk=chunk)
  state, metrics = round_fn(_lin_state(LIN_MASK, 4), data, jnp.asarray(ns),
                            jnp.array([6, 2, 9, 0], jnp.int32), jax.random.PRNGKey(1),
                            jnp.float32(lr), None)
  np.testing.assert_allclose(state.params['w'], want_w, atol=1e-6, rtol=0)
  np.testing.assert_allclose(state.params['b'], want_b, atol=1e-6, rtol=0)
  np.testing.assert_array_equal(np.asarray(state.params['w'])[~LIN_MASK['w']], 0.0)
  np.testing.assert_array_equal(np.asarray(state.params['b'])[~LIN_MASK['b']], 0.0)
  np.testing.assert_allclose(metrics.client_loss, losses, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics.train_loss, np.sum(ns / 8 * losses), rtol=1e-5)
  assert int(metrics.num_examples) == 8 and int(state.round) == 5
  jax.tree.map(np.testing.assert_array_equal, state.mask, LIN_MASK)
  # The weighting matters here: a plain mean over the cohort would land elsewhere.
  plain = np.mean([wm - lr * LIN_MASK['w'] * _np_grad_and_loss(wm, bm, x, y)[0]
                   for x, y in examples if len(y)], axis=0) * LIN_MASK['w']
  assert np.max(np.abs(plain - want_w)) > 1e-2


LIN_ROUND = federated.make_round_fn(linear_apply, optimizer='sgd', local_epochs=1)


def test_round_key_depends_on_round_and_client_id_not_position():
  """The local shuffles are fixed by (rng, round, client id): with 12 examples in 3 batches of 4
  (so the order of SGD steps matters), the same round twice is identical; the next round, or
  another id, gives another model; and a client's model inside a cohort does not depend on its
  position (the cohort's model is the n-weighted mean of its clients' models alone)."""
  ones = jax.tree.map(lambda m: np.ones_like(m), LIN_MASK)
  _, data = _lin_clients(np.array([12, 7]), steps=3, batch=4, seed=1)
  rng, lr = jax.random.PRNGKey(9), jnp.float32(0.5)

  def run(round_, ids, idx):
    d = jax.tree.map(lambda a: a[np.asarray(idx)], data)
    n = jnp.asarray(np.asarray(d.valid).sum(axis=(1, 2)), jnp.int32)
    state, _ = LIN_ROUND(_lin_state(ones, round_), d, n, jnp.asarray(ids, jnp.int32), rng, lr,
                         None)
    return np.asarray(state.params['w'])

  base = run(0, [3], [0])
  np.testing.assert_array_equal(run(0, [3], [0]), base)
  assert np.max(np.abs(run(1, [3], [0]) - base)) > 1e-4     # the round changes the shuffle
  assert np.max(np.abs(run(0, [5], [0]) - base)) > 1e-4     # so does the client id
  assert np.max(np.abs(run(1, [3], [0]) - run(2, [3], [0]))) > 1e-4
  # Client 3 with 12 examples and client 5 with 7, in either order, at round 1.
  a, b = run(1, [3], [0]), run(1, [5], [1])
  want = (12 * a + 7 * b) / 19
  np.testing.assert_allclose(run(1, [3, 5], [0, 1]), want, atol=1e-6, rtol=0)
  np.testing.assert_allclose(run(1, [5, 3], [1, 0]), want, atol=1e-6, rtol=0)
