"""Tests for autoflip_jax.data.batching."""

from __future__ import annotations

import numpy as np
import pytest

from autoflip_jax.data import batching


def _client(n, offset):
  """n examples of shape [2, 1]; example i has value offset + i."""
  vals = offset + np.arange(n, dtype=np.float32)
  return np.repeat(vals[:, None, None], 2, axis=1), (offset + np.arange(n))


def test_steps_for():
  assert batching.steps_for([5, 0, 3], 2) == 3
  assert batching.steps_for([4, 4], 2) == 2
  assert batching.steps_for([0, 0], 8) == 1
  assert batching.steps_for([], 8) == 1
  assert batching.steps_for(np.array([200] * 20), 32) == 7
  with pytest.raises(ValueError, match='batch_size'):
    batching.steps_for([3], 0)


def test_pack_clients_hand_computed():
  x0, y0 = _client(5, 10)
  x1, y1 = _client(0, 0)
  x2, y2 = _client(3, 20)
  b = batching.pack_clients([x0, x1, x2], [y0, y1, y2], batch_size=2,
                            steps=3)
  assert b.x.shape == (3, 3, 2, 2, 1)
  assert b.x.dtype == np.float32
  assert b.y.dtype == np.int32 and b.y.shape == (3, 3, 2)
  assert b.valid.dtype == np.bool_
  np.testing.assert_array_equal(b.num_examples, [5, 0, 3])
  assert b.num_examples.dtype == np.int32
  np.testing.assert_array_equal(b.valid, [
      [[1, 1], [1, 1], [1, 0]],
      [[0, 0], [0, 0], [0, 0]],
      [[1, 1], [1, 0], [0, 0]],
  ])
  np.testing.assert_array_equal(b.y, [
      [[10, 11], [12, 13], [14, 0]],
      [[0, 0], [0, 0], [0, 0]],
      [[20, 21], [22, 0], [0, 0]],
  ])
  # Example i of client 0 sits at step i // 2, slot i % 2.
  assert b.x[0, 2, 0, 0, 0] == 14.0
  assert b.x[2, 1, 0, 1, 0] == 22.0
  np.testing.assert_array_equal(b.x[:, :, :, 0, 0], b.y)
  assert np.all(b.x[~b.valid] == 0)


def test_pack_clients_exact_fit_and_overflow():
  x, y = _client(6, 0)
  b = batching.pack_clients([x], [y], batch_size=3, steps=2)
  assert b.valid.all()
  with pytest.raises(ValueError, match=r'Client 1 has 7 examples.*= 6'):
    batching.pack_clients([x, _client(7, 0)[0]], [y, _client(7, 0)[1]],
                          batch_size=3, steps=2)


def test_pack_clients_input_errors():
  x, y = _client(2, 0)
  with pytest.raises(ValueError, match='label arrays'):
    batching.pack_clients([x], [y, y], batch_size=2, steps=1)
  with pytest.raises(ValueError, match='feature shape'):
    batching.pack_clients([x, np.zeros((2, 3, 1))], [y, y], 2, 1)
  with pytest.raises(ValueError, match='labels have shape'):
    batching.pack_clients([x], [y[:1]], 2, 1)
  with pytest.raises(ValueError, match='steps'):
    batching.pack_clients([x], [y], 2, 0)


def test_pack_clients_keeps_integer_tokens():
  xs = [np.arange(6, dtype=np.int32).reshape(2, 3) + 1,
        np.array([[7, 8, 9]], np.int64)]
  b = batching.pack_clients(xs, [np.array([4, 5]), np.array([6])],
                            batch_size=2, steps=1)
  assert b.x.dtype == np.int32
  np.testing.assert_array_equal(b.x[:, 0], [[[1, 2, 3], [4, 5, 6]],
                                            [[7, 8, 9], [0, 0, 0]]])
  np.testing.assert_array_equal(b.valid, [[[1, 1]], [[1, 0]]])


def test_pack_clients_float_inputs_become_float32():
  b = batching.pack_clients([np.ones((1, 2), np.float64)], [np.array([0])],
                            batch_size=1, steps=1)
  assert b.x.dtype == np.float32
  with pytest.raises(ValueError, match='dtype'):
    batching.pack_clients([np.ones((1, 2)), np.ones((1, 2), np.int32)],
                          [np.array([0])] * 2, batch_size=1, steps=1)


def test_packer_caps_the_batch_at_the_largest_client_with_the_same_update():
  """A batch larger than the largest client only pads; capped, a client's local training is the
  same (the reference MNIST protocol: 200 examples a client, B = 350)."""
  import types

  import jax
  import jax.numpy as jnp

  from autoflip_jax import local, masks, setup

  rng = np.random.default_rng(0)
  sizes = [7, 5]
  xs = [rng.normal(size=(n, 3)).astype(np.float32) for n in sizes]
  ys = [rng.integers(0, 4, n).astype(np.int32) for n in sizes]
  dataset = types.SimpleNamespace(client_x=xs, client_y=ys, client_sizes=np.array(sizes))
  capped, n = setup.make_packer(dataset, 12)(np.array([0, 1]), place=False)
  assert capped.y.shape == (2, 1, 7)
  np.testing.assert_array_equal(n, sizes)
  padded = batching.pack_clients(xs, ys, batch_size=12, steps=1)
  params = {'w': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
  apply_fn = lambda p, x: x @ p['w']
  for k in range(2):
    outs = [local.train(params, masks.ones_mask(params),
                        jax.tree.map(lambda a: jnp.asarray(a[k]), d), jax.random.key(1),
                        apply_fn=apply_fn, optimizer='adam', learning_rate=0.1, epochs=3).params
            for d in (capped, local.ClientData(padded.x, padded.y, padded.valid))]
    np.testing.assert_allclose(outs[0]['w'], outs[1]['w'], rtol=1e-5, atol=1e-6)
