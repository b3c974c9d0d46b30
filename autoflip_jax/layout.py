"""How the engine lays out the models it traces, for the layers that choose their ops by it.

The round and the exploration trace a model either for one client at a time or under a `vmap`
over clients or variants (`federated.vmap_clients`, `federated.chunked_map`). Some layers are
fastest written one way unbatched and another way batched (`models.layers.PatchConv` on a CPU:
XLA's native convolution alone, the patches vmapped), so the engine says which while it traces,
with `vmapped_models`, and the layers ask `is_vmapped`. Neither side imports the other.
"""

from __future__ import annotations

import contextlib

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
