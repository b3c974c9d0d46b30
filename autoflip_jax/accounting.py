"""Cost accounting: parameters, FLOPs per example and bytes on the wire.

Parameters. `total` counts every parameter; `kept` counts mask entries that are True (a removed
unit's bias is not kept). Compression = total / kept.

FLOPs per example, counting a multiply-add as 2 FLOPs and a bias add as 1, for every kernel (a
parameter whose name ends in `kernel`: conv, depthwise conv, dense, squeeze-excitation and LSTM
input/recurrent kernels; an embedding is a lookup and costs nothing). A kernel's work per example
is 2 x its weight count x the number of output positions it is applied at, plus its bias adds:
  * a conv: H' x W' output positions; a depthwise conv `[kh, kw, 1, C]` the same, so it costs
    2 kh kw C H'W' (each weight one multiply-add per position), not the dense conv's C times more;
  * a dense layer, a squeeze-excitation layer (applied once to the pooled vector): 1 position;
  * an LSTM layer's input and recurrent kernels: one position per time step (all 80 for
    Shakespeare), since the scan applies both at every step. A layer's bias counts once per
    position, however many kernels share it.
Positions are read from the shape of the output of the module that owns the kernel
(`kernel_positions`: everything between the batch and the feature axis). Activations,
normalisation, pooling, residual adds, the gates' elementwise products and the loss are not
counted. XLA's own `cost_analysis()` of the dense forward pass counts those too, so it is a few
percent higher for the CNN and ResNet and about 13% higher for EfficientNet, whose cheap 1x1 and
depthwise convs leave the elementwise work a larger share (tests/test_accounting.py).
  * `dense`: the unpruned model;
  * `structured`: the physically shrunk model, where a kernel keeps only the input and output
    units that have at least one kept weight (what a user deploys without sparse kernels). This
    is the dense count of `shrink.shrink`'s model, or slightly less where unstructured pruning
    emptied a whole input row of a kernel whose input is not a unit (a residual-stream channel
    into a conv, which a deployment can skip with a gather; tests/test_shrink.py);
  * `sparse`: only kept weights do work (unstructured sparsity counted as skipped). This is the
    figure reported as `flops_per_example`.

Bytes per round, float32 values (4 bytes):
  * down, per client: the kept values of the global model, plus the mask whenever the client does
    not hold the current mask yet (the first round of a fixed mask, every round when the mask is
    rebuilt each round). The mask is sent in the cheapest of three encodings (`mask_bytes`): a
    bitmap of ceil(total / 8) bytes; the int32 index of every kept value (4 bytes each), which
    wins only above 31/32 = 96.9% sparsity; or, when whole units are removed, the structure (one
    bit per unit) and a bitmap over the shrunk model's parameters only (a client builds the
    smaller tensors and places the kept values in them). A dense mask needs none (FedAvg sends
    no mask).
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
INDEX_BYTES = 4


def total_params(params: PyTree) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def kept_params(mask: PyTree) -> int:
  return int(sum(np.count_nonzero(np.asarray(m)) for m in jax.tree.leaves(mask)))


def is_kernel(path: tuple[str, ...]) -> bool:
  """Kernels do multiply-adds: `kernel`, `input_kernel`, `recurrent_kernel`, ..."""
  return path[-1].endswith('kernel')


def kernel_positions(apply_fn, params: PyTree, input_shape: tuple[int, ...],
                     dtype=jnp.float32) -> dict:
  """{kernel path: output positions per example}, from the shapes of the modules' outputs.

  `apply_fn(variables, x, **kw)` is a Flax `Module.apply`; only shapes are computed. The owning
  module's output `[batch, *positions, features]` gives the positions: H' x W' for a conv, 1 for
  a dense layer, the number of time steps for an LSTM layer.
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)
  _, state = jax.eval_shape(
      lambda p, x: apply_fn({'params': p}, x, capture_intermediates=True,
                            mutable=['intermediates']), params, x)
  inter = traverse_util.flatten_dict(state['intermediates'])
  positions = {}
  for path in traverse_util.flatten_dict(params):
    if not is_kernel(path):
      continue
    out = inter[path[:-1] + ('__call__',)][0]
    positions[path] = int(np.prod(out.shape[1:-1]))
  return positions


def flops_per_example(params: PyTree, mask: PyTree | None, positions: dict,
                      mode: str = 'sparse') -> int:
  """FLOPs of one forward pass: `dense`, `structured` or `sparse` (see module docstring).

  The input-unit axis of a kernel is -2 and the output-unit axis -1 (`[.., in, out]`; a
  depthwise kernel's input axis has size 1); every leading axis is the spatial window.
  """
  if mode not in ('dense', 'structured', 'sparse'):
    raise ValueError(f'FLOPs mode {mode!r} is not one of (dense, structured, sparse)')
  flat_p = traverse_util.flatten_dict(params)
  flat_m = traverse_util.flatten_dict(mask) if mask is not None else None
  flops = 0
  biases_counted = set()
  for path, pos in positions.items():
    kernel = flat_p[path]
    bias_path = path[:-1] + ('bias',)
    has_bias = bias_path in flat_p and bias_path not in biases_counted
    biases_counted.add(bias_path)
    if mode == 'dense' or flat_m is None:
      weights, outputs = int(np.prod(kernel.shape)), kernel.shape[-1]
    else:
      m = np.asarray(flat_m[path])
      out_alive = m.reshape(-1, m.shape[-1]).any(axis=0)
      outputs = int(out_alive.sum())
      if mode == 'sparse':
        weights = int(m.sum())
      else:
        in_alive = np.moveaxis(m, -2, 0).reshape(m.shape[-2], -1).any(axis=1)
        window = int(np.prod(m.shape[:-2]))
        weights = window * int(in_alive.sum()) * outputs
    flops += pos * (2 * weights + (outputs if has_bias else 0))
  return flops


def mask_bitmap_bytes(total: int) -> int:
  return math.ceil(total / 8)


def mask_bytes(kept: int, total: int, shrunk: int | None = None,
               units: int = 0) -> tuple[int, str]:
  """Bytes to send a mask keeping `kept` of `total` values, and the encoding that achieves it.

  `bitmap`: one bit per parameter, ceil(total / 8) bytes. `indices`: the int32 flat index of every
  kept value, 4 kept bytes (cheaper only when kept < total / 32). `structure`: when whole units
  are removed (`shrunk` < total parameters remain in the shrunk model, `shrink.shrunk_params`),
  one bit per unit of the model (which units stay, ceil(units / 8)) and a bitmap over the shrunk
  model's `shrunk` parameters. `dense`: a mask that keeps everything is not sent (0 bytes). Ties
  go to the bitmap.
  """
  if kept == total:
    return 0, 'dense'
  options = [(mask_bitmap_bytes(total), 'bitmap'), (kept * INDEX_BYTES, 'indices')]
  if shrunk is not None and shrunk < total:
    options.append((mask_bitmap_bytes(units) + mask_bitmap_bytes(shrunk), 'structure'))
  return min(options, key=lambda o: o[0])


def round_bytes(kept: int, total: int, clients: int, send_mask: bool, shrunk: int | None = None,
                units: int = 0) -> tuple[int, int]:
  """(bytes up, bytes down) of one round for `clients` sampled clients; `shrunk`, `units` as in
  `mask_bytes`."""
  down = kept * VALUE_BYTES + (mask_bytes(kept, total, shrunk, units)[0] if send_mask else 0)
  up = kept * VALUE_BYTES
  return clients * up, clients * down


def exploration_bytes(total: int, explorers: int) -> tuple[int, int]:
  """(bytes up, bytes down) of the exploration phase: dense model down, dense deviations up."""
  return explorers * total * VALUE_BYTES, explorers * total * VALUE_BYTES
