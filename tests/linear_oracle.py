"""A 3-class linear model whose training is computed by hand in NumPy: the independent oracle of
the local-training, exploration and round tests.

The softmax cross-entropy gradient of logits = x w + b over n examples, in float64:
dlogits = (softmax(logits) - onehot(y)) / n, dw = x^T dlogits, db = sum dlogits.
"""

import jax.numpy as jnp
import numpy as np

from autoflip_jax import local

LIN_W = np.array([[0.1, -0.1, 0.6], [0.1, -0.5, 0.4], [1.3, 0.9, -0.7]], np.float32)
LIN_B = np.array([0.1, -0.2, 0.3], np.float32)
# Keeps 6 of the 9 weights and 2 of the 3 biases.
LIN_MASK = {'w': np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], bool), 'b': np.array([1, 1, 0], bool)}


def linear_apply(p, x):
  return x @ p['w'] + p['b']


def np_grad_and_loss(w, b, x, y):
  """(dw, db, mean loss) of the linear model on (x, y), by hand in float64."""
  w, b, x = (np.asarray(a, np.float64) for a in (w, b, x))
  z = x @ w + b
  z -= z.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  d = np.exp(logp)
  d[np.arange(len(y)), y] -= 1.0
  d /= len(y)
  return x.T @ d, d.sum(axis=0), -np.mean(logp[np.arange(len(y)), y])


def lin_clients(ns, steps, batch, seed):
  """Clients' examples (lists of (x, y)) and their padded ClientData; padding is large garbage."""
  rng = np.random.default_rng(seed)
  k, slots = len(ns), steps * batch
  x = (rng.normal(size=(k, slots, 3)) * 50.0).astype(np.float32)
  y = rng.integers(0, 3, (k, slots)).astype(np.int32)
  valid = np.arange(slots)[None] < np.asarray(ns)[:, None]
  x[valid] = rng.normal(size=(int(valid.sum()), 3)).astype(np.float32)
  examples = [(x[i, :n].copy(), y[i, :n].copy()) for i, n in enumerate(ns)]
  data = local.ClientData(jnp.asarray(x.reshape(k, steps, batch, 3)),
                          jnp.asarray(y.reshape(k, steps, batch)),
                          jnp.asarray(valid.reshape(k, steps, batch)))
  return examples, data
