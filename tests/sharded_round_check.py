"""Run by tests/test_sharding.py in a process with 8 host devices: the sharded round must equal
the single-device round. Prints OK and the max difference."""

import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import federated, local, masks, sharding
from autoflip_jax.models.cnn import CNN

assert jax.device_count() == 8, jax.devices()
model = CNN(num_classes=3, channels=(4, 8), hidden=16)
apply_fn = lambda p, x: model.apply({'params': p}, x)
params = model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))['params']
mask = masks.hybrid_mask(masks.normalize(jax.tree.map(
    lambda p: jax.random.uniform(jax.random.key(p.size), p.shape), params)), 0.3, model.units())
c, s, b = 8, 2, 4
rng = np.random.default_rng(0)
ns = np.array([8, 3, 0, 5, 8, 1, 7, 2], np.int32)
valid = np.arange(s * b)[None] < ns[:, None]
data = local.ClientData(
    jnp.asarray(rng.normal(size=(c, s, b, 12, 12, 1)).astype(np.float32) * valid.reshape(
        c, s, b, 1, 1, 1)),
    jnp.asarray(rng.integers(0, 3, (c, s, b)).astype(np.int32)),
    jnp.asarray(valid.reshape(c, s, b)))
ids, key, lr = jnp.arange(10, 18), jax.random.key(3), jnp.float32(1e-2)
round_fn = federated.make_round_fn(apply_fn, optimizer='adam', local_epochs=2)

def run(mesh):
  state = federated.ServerState(sharding.replicate(jax.tree.map(jnp.copy, params), mesh),
                                sharding.replicate(jax.tree.map(jnp.copy, mask), mesh),
                                jnp.int32(0))
  d, n, i = sharding.shard_clients((data, jnp.asarray(ns), ids), mesh)
  if mesh is not None:
    assert len(d.x.sharding.device_set) == mesh.size
  return round_fn(state, d, n, i, key, lr, None)

single, _ = run(None)
sharded, met = run(sharding.client_mesh(8))
assert len(jax.tree.leaves(sharded.params)[0].sharding.device_set) == 8
diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
           zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)))
assert diff < 1e-5, diff
pruned = [np.asarray(p)[~np.asarray(m)] for p, m in
          zip(jax.tree.leaves(sharded.params), jax.tree.leaves(sharded.mask))]
assert all(np.all(p == 0) for p in pruned)

# A group that does not divide over the mesh (3 clients, 8 devices) is placed whole on every
# device: still the single-device result.
three = jax.tree.map(lambda a: a[:3], (data, jnp.asarray(ns), ids))
mesh = sharding.client_mesh(8)
d3 = sharding.shard_clients(three, mesh)
assert d3[0].x.sharding.is_fully_replicated
state = lambda m: federated.ServerState(sharding.replicate(jax.tree.map(jnp.copy, params), m),
                                        sharding.replicate(jax.tree.map(jnp.copy, mask), m),
                                        jnp.int32(0))
want, _ = round_fn(state(None), *three, key, lr, None)
got, _ = round_fn(state(mesh), *d3, key, lr, None)
diff3 = max(float(jnp.max(jnp.abs(a - b))) for a, b in
            zip(jax.tree.leaves(want.params), jax.tree.leaves(got.params)))
assert diff3 < 1e-5, diff3
print('OK', diff, diff3)

# The whole run: the same config on 1 device and with the cohort split over 8; two seeds side by
# side, so each variant's own cohort is split over the mesh too.
import json, sys, tempfile  # noqa: E401,E402
sys.path.insert(0, '.')
from autoflip_jax import train  # noqa: E402
from tests.helpers import tiny_config  # noqa: E402

runs = []
for devices in (1, 8):
  workdir = tempfile.mkdtemp()
  train.train_and_evaluate(tiny_config(num_clients=8, clients_per_round=8, mesh_devices=devices,
                                       algorithm='autoflip', seeds='0,1', num_rounds=1),
                           workdir)
  with open(f'{workdir}/metrics.jsonl') as f:
    runs.append([json.loads(line) for line in f])
for a, b in zip(*runs):
  assert (a['algorithm'], a['seed'], a['round'], a['kept_params'], a['bytes_up']) == (
      b['algorithm'], b['seed'], b['round'], b['kept_params'], b['bytes_up'])
  assert abs(a['test_loss'] - b['test_loss']) < 1e-4, (a, b)
  assert abs(a['test_accuracy'] - b['test_accuracy']) <= 0.002, (a, b)
assert {a['seed'] for a in runs[0]} == {0, 1}
print('RUN OK')
