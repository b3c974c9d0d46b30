"""Cost accounting: parameters, FLOPs per example and bytes on the wire.

Parameters. `total` counts every parameter; `kept` counts mask entries that are True (a removed
unit's bias is not kept). Compression = total / kept.

FLOPs per example, counting a multiply-add as 2 FLOPs and a bias add as 1, for the kernels of
conv and dense layers (activations, pooling and the loss are not counted; XLA's own
`cost_analysis()` of the dense forward pass is within a few percent, see the tests):
  * `dense`: the unpruned model;
  * `structured`: the physically shrunk model, where a kernel keeps only the input and output
    units that have at least one kept weight (what a user deploys without sparse kernels);
  * `sparse`: only kept weights do work (unstructured sparsity counted as skipped). This is the
    figure reported as `flops_per_example`.
A kernel's work per example is its weight count times the number of output positions it is
applied at (1 for a dense layer, H'×W' for a convolution), read from the model's intermediates.

Bytes per round, float32 values (4 bytes):
  * down, per client: the kept values of the global model, plus the mask as a bitmap
    (ceil(total / 8) bytes) whenever the client does not hold the current mask yet (the first
    round of a fixed mask, every round when the mask is rebuilt each round). A dense model
    (FedAvg) sends no bitmap.
  * up, per client: the kept values of its new local model (the client knows the mask).
  * exploration (AutoFLIP, once): each explorer downloads the dense θ0 and uploads its dense
    squared-deviation tensor.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

PyTree = Any
VALUE_BYTES = 4


def total_params(params: PyTree) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def kept_params(mask: PyTree) -> int:
  return int(sum(int(jnp.sum(m)) for m in jax.tree.leaves(mask)))


def kernel_positions(apply_fn, params: PyTree, input_shape: tuple[int, ...],
                     dtype=jnp.float32) -> dict:
  """{kernel path: output positions per example}, from the shapes of the modules' outputs.

  `apply_fn(variables, x, **kw)` is a Flax `Module.apply`; only shapes are computed.
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)
  _, state = jax.eval_shape(
      lambda p, x: apply_fn({'params': p}, x, capture_intermediates=True,
                            mutable=['intermediates']), params, x)
  inter = traverse_util.flatten_dict(state['intermediates'])
  positions = {}
  for path, p in traverse_util.flatten_dict(params).items():
    if path[-1] != 'kernel':
      continue
    out = inter[path[:-1] + ('__call__',)][0]
    positions[path] = int(np.prod(out.shape[1:-1]))
  return positions


def flops_per_example(params: PyTree, mask: PyTree | None, positions: dict,
                      mode: str = 'sparse') -> int:
  """FLOPs of one forward pass: `dense`, `structured` or `sparse` (see module docstring)."""
  flat_p = traverse_util.flatten_dict(params)
  flat_m = traverse_util.flatten_dict(mask) if mask is not None else None
  flops = 0
  for path, pos in positions.items():
    kernel = flat_p[path]
    bias_path = path[:-1] + ('bias',)
    has_bias = bias_path in flat_p
    if mode == 'dense' or flat_m is None:
      weights, outputs = int(np.prod(kernel.shape)), kernel.shape[-1]
    else:
      m = np.asarray(flat_m[path])
      out_alive = m.reshape(-1, m.shape[-1]).any(axis=0)
      outputs = int(out_alive.sum())
      if mode == 'sparse':
        weights = int(m.sum())
      elif mode == 'structured':
        # Input units with any kept weight (the input-channel / input-feature axis is -2).
        in_alive = np.moveaxis(m, -2, 0).reshape(m.shape[-2], -1).any(axis=1)
        window = int(np.prod(m.shape[:-2]))
        weights = window * int(in_alive.sum()) * outputs
      else:
        raise ValueError(f'FLOPs mode {mode!r} is not one of (dense, structured, sparse)')
    flops += pos * (2 * weights + (outputs if has_bias else 0))
  return flops


def mask_bitmap_bytes(total: int) -> int:
  return math.ceil(total / 8)


def round_bytes(kept: int, total: int, clients: int, send_mask: bool) -> tuple[int, int]:
  """(bytes up, bytes down) of one round for `clients` sampled clients."""
  down = kept * VALUE_BYTES + (mask_bitmap_bytes(total) if send_mask else 0)
  up = kept * VALUE_BYTES
  return clients * up, clients * down


def exploration_bytes(total: int, explorers: int) -> tuple[int, int]:
  """(bytes up, bytes down) of the exploration phase: dense model down, dense deviations up."""
  return explorers * total * VALUE_BYTES, explorers * total * VALUE_BYTES
