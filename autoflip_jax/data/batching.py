"""Packs ragged per-client datasets into dense, padded host arrays.

The training engine runs all clients in lockstep (vmap over clients, scan
over steps), so every client's data is laid out as [steps, batch, ...] with a
`valid` mask marking real examples. Numpy only; no shuffling happens here
(the engine permutes examples on device each epoch).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class ClientBatch(NamedTuple):
  """Padded data of all clients.

  Attributes:
    x: [clients, steps, batch, *feature_shape]; zeros where invalid. float32
      for floating inputs (images), int32 for integer inputs (tokens).
    y: int32 [clients, steps, batch]; zeros where invalid.
    valid: bool [clients, steps, batch]; True exactly at real examples.
    num_examples: int32 [clients]; number of real examples per client.
  """
  x: np.ndarray
  y: np.ndarray
  valid: np.ndarray
  num_examples: np.ndarray


def steps_for(sizes: Sequence[int] | np.ndarray, batch_size: int) -> int:
  """Returns ceil(max(sizes) / batch_size), and at least 1.

  This is the number of batches needed to hold the largest client's data.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  sizes = np.asarray(sizes, dtype=np.int64)
  largest = int(sizes.max()) if sizes.size else 0
  return max(1, -(-largest // batch_size))


def packed_dtype(dtype: np.dtype) -> type:
  """float32 for floating or boolean inputs, int32 for integer ones."""
  return np.int32 if np.issubdtype(dtype, np.integer) else np.float32


def pack_clients(xs: list[np.ndarray], ys: list[np.ndarray], batch_size: int,
                 steps: int) -> ClientBatch:
  """Packs each client's examples, in stored order, into [steps, batch] slots.

  Client k's example i goes to step i // batch_size, slot i % batch_size
  (row-major fill of a flat [steps * batch_size] buffer); all later slots are
  zero-padded and marked invalid. A client with zero examples is allowed.

  Args:
    xs: per-client inputs, each [n_k, *feature_shape] (same feature shape).
    ys: per-client integer labels, each [n_k].
    batch_size: examples per step.
    steps: steps per client; steps * batch_size must be >= every n_k.

  Returns:
    A `ClientBatch` with leading dimensions [len(xs), steps, batch_size].

  Raises:
    ValueError: on mismatched lengths or feature shapes, non-positive
      batch_size/steps, or a client with more than steps * batch_size
      examples.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  if steps < 1:
    raise ValueError(f'steps must be >= 1, got {steps}.')
  if len(xs) != len(ys):
    raise ValueError(f'Got {len(xs)} input arrays but {len(ys)} label arrays.')
  if not xs:
    raise ValueError('pack_clients needs at least one client.')
  feature_shape = tuple(np.shape(xs[0])[1:])
  x_dtype = packed_dtype(np.asarray(xs[0]).dtype)
  capacity = steps * batch_size
  num_clients = len(xs)
  x_out = np.zeros((num_clients, capacity) + feature_shape, x_dtype)
  y_out = np.zeros((num_clients, capacity), np.int32)
  valid = np.zeros((num_clients, capacity), bool)
  counts = np.zeros((num_clients,), np.int32)
  for k, (x, y) in enumerate(zip(xs, ys)):
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[1:] != feature_shape:
      raise ValueError(
          f'Client {k} has feature shape {x.shape[1:]}, expected '
          f'{feature_shape} (from client 0).')
    if packed_dtype(x.dtype) != x_dtype:
      raise ValueError(
          f'Client {k} has inputs of dtype {x.dtype}, client 0 of '
          f'{np.asarray(xs[0]).dtype}: all must be floating or all integer.')
    if y.ndim != 1 or len(y) != len(x):
      raise ValueError(
          f'Client {k}: labels have shape {y.shape}, expected ({len(x)},).')
    n = len(x)
    if n > capacity:
      raise ValueError(
          f'Client {k} has {n} examples, more than steps * batch_size = '
          f'{steps} * {batch_size} = {capacity}; increase steps (see '
          'steps_for).')
    x_out[k, :n] = x
    y_out[k, :n] = y
    valid[k, :n] = True
    counts[k] = n
  lead = (num_clients, steps, batch_size)
  return ClientBatch(
      x=x_out.reshape(lead + feature_shape),
      y=y_out.reshape(lead),
      valid=valid.reshape(lead),
      num_examples=counts)
