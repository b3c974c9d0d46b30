"""Where arrays live: the clients mesh, client-split and replicated placement, host reads.

The round engine (`federated.py`), the runner (`train.py`) and checkpointing (`checkpoint.py`)
all place arrays through these few functions (big_vision keeps its sharding utilities in one
module the same way). The same code runs on one CPU, on 8 fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on GPUs and on a TPU slice.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

PyTree = Any


def client_mesh(num_devices: int) -> jax.sharding.Mesh | None:
  """A 1-D mesh over the first `num_devices` devices with a `clients` axis; None for 1 device.

  After `jax.distributed.initialize()` (`autoflip_jax.distributed`) `jax.devices()` spans every
  process, each process's devices contiguous, so the mesh's first devices are process 0's.
  """
  if num_devices <= 1:
    return None
  devices = jax.devices()
  if num_devices > len(devices):
    raise ValueError(f'config.mesh_devices={num_devices} but only {len(devices)} devices are '
                     f'visible ({jax.default_backend()})')
  return jax.sharding.Mesh(np.asarray(devices[:num_devices]), ('clients',))


def shard_clients(tree: PyTree, mesh: jax.sharding.Mesh | None, axis: int = 0) -> PyTree:
  """Places client-batched arrays split over the mesh's `clients` axis at position `axis`.

  `axis` is 0 for `[clients, ...]` and 1 for arrays with a leading variant axis
  `[variants, clients, ...]`. A group of clients that does not divide over the mesh (PruneFL's
  one initial client, an explorer count that is not a multiple of the devices) is placed whole on
  every device instead: each device then trains all of them, the same results as without a mesh.
  """
  if mesh is None:
    return tree
  leaves = jax.tree.leaves(tree)
  split = bool(leaves) and np.shape(leaves[0])[axis] % mesh.size == 0
  spec = jax.sharding.PartitionSpec(*([None] * axis + ['clients'])) if split else (
      jax.sharding.PartitionSpec())
  sharding = jax.sharding.NamedSharding(mesh, spec)
  return jax.tree.map(lambda a: _put_global(a, sharding), tree)


def replicate(tree: PyTree, mesh: jax.sharding.Mesh | None) -> PyTree:
  """Places server-side arrays (params, mask, the algorithm's state) whole on every device."""
  if mesh is None:
    return tree
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda a: _put_global(a, spec), tree)


def is_writer() -> bool:
  """Whether this process writes the workdir's files other than checkpoints: process 0."""
  return jax.process_index() == 0


def host_value(a):
  """`a` as a NumPy value on this host; an array spanning processes is read whole.

  A replicated global array gives its local copy; a sharded one is gathered from every process
  (a collective: every process must call this alike). Anything else passes through unchanged.
  """
  if not isinstance(a, jax.Array) or a.is_fully_addressable:
    return a
  if a.is_fully_replicated:
    return np.asarray(a.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def _put_global(a, spec: jax.sharding.NamedSharding) -> jax.Array:
  """`a` placed with `spec`. One process: `device_put`. A mesh spanning processes (after
  `jax.distributed.initialize`): every process holds the same whole host value (same program,
  same seed) and fills only its own devices' shards from it, with no cross-host traffic."""
  if spec.is_fully_addressable or (isinstance(a, jax.Array) and not a.is_fully_addressable):
    return jax.device_put(a, spec)
  if jax.dtypes.issubdtype(getattr(a, 'dtype', None), jax.dtypes.prng_key):
    # Typed PRNG keys (the variants' round keys) have no NumPy form: place their data.
    return jax.random.wrap_key_data(_put_global(jax.random.key_data(a), spec),
                                    impl=jax.random.key_impl(a))
  host = np.asarray(a)
  return jax.make_array_from_callback(host.shape, spec, lambda index: host[index])
