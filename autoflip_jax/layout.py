"""How the engine lays out the models it traces, for the layers that choose their ops by it.

The round and the exploration trace a model either for one client at a time or under a `vmap`
over clients or variants (`federated.vmap_clients`, `federated.chunked_map`). Some layers are
fastest written one way unbatched and another way batched (`models.layers.PatchConv` on a CPU:
XLA's native convolution alone, the patches vmapped), so the engine says which while it traces,
with `vmapped_models`, and the layers ask `is_vmapped`. Neither side imports the other.

It also holds the XLA options every program that trains or evaluates a model is compiled with
(`jit`, `compiler_options`): on a CPU, XLA 0.10 hands convolutions to YNNPACK by default, and
the reference round ran 1.26-1.28x slower with them than with XLA's own (Eigen) convolutions
(`benchmarks/round_throughput.py` times both); the dots stay with YNNPACK.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import jax

_VMAPPED = [0]  # > 0 while models are traced under a vmap over clients or variants


@contextlib.contextmanager
def vmapped_models():
  """Within the block, models are traced under a `vmap` over clients or variants."""
  _VMAPPED[0] += 1
  try:
    yield
  finally:
    _VMAPPED[0] -= 1


def is_vmapped() -> bool:
  """Whether models traced now are under one of the engine's vmaps."""
  return _VMAPPED[0] > 0


# The one XLA option the engine sets on a CPU: only dots go to YNNPACK (its default also sends
# convolutions and reductions there). A repeated enum, so one value replaces the whole list.
YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
YNN_DOTS_ONLY = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
_DEFAULT_OPTIONS = [True]  # False inside `xla_defaults()`


def compiler_options() -> dict[str, Any] | None:
  """XLA options for the programs that run a model, on this backend: on a CPU, convolutions
  stay with XLA's own kernels (`YNN_OPTION` = dots only); elsewhere none. A user who sets
  `YNN_OPTION` in `XLA_FLAGS` keeps their choice, and `xla_defaults()` turns it off (benchmarks
  time both)."""
  if not _DEFAULT_OPTIONS[0] or jax.default_backend() != 'cpu':
    return None
  if YNN_OPTION in os.environ.get('XLA_FLAGS', ''):
    return None
  return {YNN_OPTION: YNN_DOTS_ONLY}


@contextlib.contextmanager
def xla_defaults():
  """Within the block, `jit` compiles with XLA's default options (for benchmarks)."""
  before = _DEFAULT_OPTIONS[0]
  _DEFAULT_OPTIONS[0] = False
  try:
    yield
  finally:
    _DEFAULT_OPTIONS[0] = before


def jit(fun: Callable, **kwargs) -> Callable:
  """`jax.jit` with `compiler_options()` (read now, when the program is built)."""
  return jax.jit(fun, compiler_options=compiler_options(), **kwargs)
