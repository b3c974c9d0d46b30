"""Times one federated round three ways, side by side in one run.

  (a) ours: the whole round as one jitted program, clients `vmap`ped (`federated.make_round_fn`);
  (b) loop: a Python loop over clients of a jitted per-client `local.train`, then FedAvg on the
      host (the FedJAX / Flower pattern);
  (c) central: one model trained on all the cohort's examples, the same number of optimizer steps
      of the same batch size (the hardware's limit for this work).

Prints client-steps per second for each, the ratios, compile times and peak host memory, and
as its last line one JSON object.

  JAX_PLATFORMS=cpu python -m benchmarks.round_throughput --clients=5 --steps=7 --batch=32
"""

from __future__ import annotations

import json
import resource

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autoflip_jax import federated, local, masks, models
from benchmarks import timing

_CLIENTS = flags.DEFINE_integer('clients', 5, 'Clients per round.')
_STEPS = flags.DEFINE_integer('steps', 7, 'Local steps per epoch per client.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Local epochs.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repetitions (median reported).')
_MODEL = flags.DEFINE_string('model', 'cnn', 'Model name (models.MODELS).')
_HIDDEN = flags.DEFINE_integer('hidden', 512, 'CNN hidden units.')
_CHUNK = flags.DEFINE_integer('chunk', 0, 'Clients per chunk in our round (0: whole cohort).')


def main(argv):
  del argv
  c, s, b, e = _CLIENTS.value, _STEPS.value, _BATCH.value, _EPOCHS.value
  config = ml_collections.ConfigDict({'model': _MODEL.value,
                                      'model_config': {'hidden': _HIDDEN.value}})
  model = models.get_model(config, 10)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  mask = masks.ones_mask(params)
  rng = np.random.default_rng(0)
  data = local.ClientData(
      jnp.asarray(rng.random((c, s, b, 28, 28, 1), dtype=np.float32)),
      jnp.asarray(rng.integers(0, 10, (c, s, b)), dtype=jnp.int32),
      jnp.ones((c, s, b), bool))
  num_examples = jnp.full((c,), s * b, jnp.int32)
  ids = jnp.arange(c)
  key, lr = jax.random.key(1), jnp.float32(0.05)
  client_steps = c * s * e

  round_fn = federated.make_round_fn(apply_fn, optimizer='sgd', local_epochs=e,
                                     clients_per_chunk=_CHUNK.value)

  def ours():
    state = federated.ServerState(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, mask),
                                  jnp.int32(0))  # the round donates its state
    return round_fn(state, data, num_examples, ids, key, lr, None)[0].params

  one_client = jax.jit(lambda p, d, k: local.train(
      p, mask, d, k, apply_fn=apply_fn, optimizer='sgd', learning_rate=lr, epochs=e).params)

  def loop():
    outs = [one_client(params, jax.tree.map(lambda a: a[i], data), jax.random.fold_in(key, i))
            for i in range(c)]
    return jax.tree.map(lambda *ps: sum(ps) / c, *outs)

  central_data = jax.tree.map(lambda a: a.reshape((1, c * s) + a.shape[2:]), data)
  central_data = jax.tree.map(lambda a: a[0], central_data)
  central_fn = jax.jit(lambda p, d, k: local.train(
      p, mask, d, k, apply_fn=apply_fn, optimizer='sgd', learning_rate=lr, epochs=e).params)

  results = {}
  for name, fn in (('ours', ours), ('loop', loop),
                   ('central', lambda: central_fn(params, central_data, key))):
    first, run_s = timing.time_call(fn, _REPEATS.value)
    compile_s = first - run_s
    results[name] = dict(seconds=run_s, compile_seconds=compile_s,
                         client_steps_per_s=client_steps / run_s)
    print(f'{name:8s} {run_s:8.3f} s/round  {client_steps / run_s:8.1f} client-steps/s  '
          f'compile {compile_s:6.1f} s')
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  speedup = results['loop']['seconds'] / results['ours']['seconds']
  central_ratio = results['ours']['seconds'] / results['central']['seconds']
  print(f'round vs loop speed-up (loop time / ours): {speedup:.2f}x')
  print(f'round vs central ratio (ours / central):   {central_ratio:.2f}x')
  print(f'peak host memory: {peak:.0f} MiB   backend: {jax.default_backend()}')
  print(json.dumps(dict(model=_MODEL.value, clients=c, clients_per_chunk=_CHUNK.value, steps=s, batch=b, epochs=e,
                        backend=jax.default_backend(), round_vs_loop_speedup=speedup,
                        round_vs_central_ratio=central_ratio, peak_host_mib=peak,
                        **{f'{k}_{m}': v for k, r in results.items() for m, v in r.items()})))


if __name__ == '__main__':
  app.run(main)
