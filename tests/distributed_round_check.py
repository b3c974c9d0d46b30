"""Run by tests/test_distributed.py: two federated rounds of a tiny CNN, written to an .npz.

`python distributed_round_check.py OUT.npz` runs them in this one process on one device;
`python distributed_round_check.py OUT.npz HOST:PORT NUM_PROCESSES PROCESS_ID` joins a
multi-process run (`autoflip_jax.distributed.initialize`) and splits the cohort over every
process's devices. Every process builds the same model and data from the same seeds, as a
multi-host run does. (The same tiny round as tests/sharded_round_check.py, which runs its checks
on import and so cannot be imported here.)
"""

import sys

out = sys.argv[1]
multi = len(sys.argv) > 2
if multi:
  from autoflip_jax import distributed
  distributed.initialize(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                         initialization_timeout=60)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from autoflip_jax import federated, local, masks, sharding  # noqa: E402
from autoflip_jax.models.cnn import CNN  # noqa: E402

model = CNN(num_classes=3, channels=(4, 8), hidden=16)
apply_fn = lambda p, x: model.apply({'params': p}, x)


@jax.jit
def init():
  # One compile instead of a hundred eager ones (most of the check's start-up time on CPU).
  params = model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))['params']
  scores = jax.tree.map(lambda p: jax.random.uniform(jax.random.key(p.size), p.shape), params)
  return params, masks.hybrid_mask(masks.normalize(scores), 0.3, model.units())


params, mask = jax.device_get(init())
c, s, b = 8, 2, 4
rng = np.random.default_rng(0)
ns = np.array([8, 3, 0, 5, 8, 1, 7, 2], np.int32)
valid = np.arange(s * b)[None] < ns[:, None]
data = local.ClientData(
    (rng.normal(size=(c, s, b, 12, 12, 1)).astype(np.float32)
     * valid.reshape(c, s, b, 1, 1, 1)),
    rng.integers(0, 3, (c, s, b)).astype(np.int32),
    valid.reshape(c, s, b))
key, lr = jax.random.key(3), jnp.float32(1e-2)
round_fn = federated.make_round_fn(apply_fn, optimizer='adam', local_epochs=2)

mesh = sharding.client_mesh(jax.device_count()) if multi else None
if multi:
  assert jax.process_count() == int(sys.argv[3]) and mesh is not None, jax.devices()
  assert mesh.size == jax.device_count() > jax.local_device_count()
state = federated.ServerState(sharding.replicate(params, mesh),
                              sharding.replicate(mask, mesh),
                              sharding.replicate(np.int32(0), mesh))


def host(a):
  """The whole value of a global array in every process: a replicated one's local copy, a
  client-sharded one gathered from all processes."""
  if not multi or a.is_fully_replicated:
    return np.asarray(a.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


result = {}
for r in range(2):
  # A new cohort each round: the same clients' data with the order (and ids) rolled.
  order = np.roll(np.arange(c), 3 * r)
  d, n, ids = sharding.shard_clients(
      (jax.tree.map(lambda a: a[order], data), ns[order], np.arange(10, 18)[order]), mesh)
  if multi:
    # Each process holds only its own devices' clients.
    assert not d.x.is_fully_addressable and len(d.x.sharding.device_set) == jax.device_count()
    assert sum(s.data.shape[0] for s in d.x.addressable_shards) == c // jax.process_count()
  state, met = round_fn(state, d, n, ids, key, lr, None)
  result[f'train_loss_{r}'] = host(met.train_loss)
  result[f'client_loss_{r}'] = host(met.client_loss)
for i, (p, m) in enumerate(zip(jax.tree.leaves(state.params), jax.tree.leaves(state.mask))):
  result[f'param_{i}'], result[f'mask_{i}'] = host(p), host(m)
result['round'] = host(state.round)
result['process_count'] = np.int32(jax.process_count())
np.savez(out, **result)
print('OK', jax.process_index(), jax.devices())
