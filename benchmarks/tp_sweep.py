"""Times a Tp sweep's round, side by side in one run.

  (a) sweep: the K thresholds' models stacked and trained by ONE jitted program
      (`federated.make_variant_round_fn`) in the layout a run picks for this backend: thresholds
      `vmap`ped on GPUs/TPUs, one after another inside the program on a CPU;
  (a') sweep_vmap: on a CPU, also the vmapped layout, for comparison;
  (b) sequential: K calls of the plain jitted round (`federated.make_round_fn`), one per
      threshold's mask: what K separate runs (`experiments/sweep.py`) spend per round.

Both train the same cohort (synthetic MNIST-shaped data, the CNN) under the hybrid masks of
random guidance at each Tp. Prints seconds per round (for all K thresholds) for each, the ratio
sequential / sweep (the ways timed in turns, `timing.time_interleaved`), compile times, and as
its last line one JSON object.

  JAX_PLATFORMS=cpu python -m benchmarks.tp_sweep --tps=0.1,0.2,0.3
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from autoflip_jax import federated, local, masks, models
from benchmarks import timing

_TPS = flags.DEFINE_list('tps', ['0.1', '0.2', '0.3'], 'Thresholds trained side by side.')
_CLIENTS = flags.DEFINE_integer('clients', 5, 'Clients per round.')
_STEPS = flags.DEFINE_integer('steps', 7, 'Local steps per epoch per client.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Local epochs.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repetitions (median reported).')
_HIDDEN = flags.DEFINE_integer('hidden', 512, 'CNN hidden units.')
_CHUNK = flags.DEFINE_integer('chunk', 0, 'config.clients_per_chunk (0: auto, '
                             'federated.resolve_chunk).')


def main(argv):
  del argv
  tps = [float(t) for t in _TPS.value]
  k, c, s, b, e = len(tps), _CLIENTS.value, _STEPS.value, _BATCH.value, _EPOCHS.value
  config = ml_collections.ConfigDict({'model': 'cnn', 'model_config': {'hidden': _HIDDEN.value}})
  model = models.get_model(config, 10)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  guidance = masks.normalize(jax.tree.unflatten(
      treedef, [jax.random.uniform(key, p.shape) for key, p in zip(keys, leaves)]))
  mask_list = [jax.jit(lambda g, tp=tp: masks.hybrid_mask(g, tp, model.units()))(guidance)
               for tp in tps]
  rng = np.random.default_rng(0)
  data = local.ClientData(
      jnp.asarray(rng.random((c, s, b, 28, 28, 1), dtype=np.float32)),
      jnp.asarray(rng.integers(0, 10, (c, s, b)), dtype=jnp.int32),
      jnp.ones((c, s, b), bool))
  num_examples = jnp.full((c,), s * b, jnp.int32)
  ids = jnp.arange(c)
  key, lr = jax.random.key(1), jnp.float32(0.05)
  chunk = federated.resolve_chunk(_CHUNK.value)
  kw = dict(optimizer='sgd', local_epochs=e, clients_per_chunk=chunk)
  # The layout a run picks (setup.resolve): thresholds one after another where clients are.
  layouts = {'sweep': 1 if chunk == 1 else 0, 'sweep_vmap': 0}
  sweep_fns = {name: federated.make_variant_round_fn(apply_fn, num_variants=k,
                                                     variants_per_chunk=t, **kw)
               for name, t in layouts.items()
               if name == 'sweep' or t != layouts['sweep']}
  stacked_params, stacked_mask = federated.stack([params] * k), federated.stack(mask_list)
  keys = jnp.stack([key] * k)  # every threshold with the same round key, as in a run

  def sweep_with(sweep_fn):
    def sweep():
      state = federated.ServerState(jax.tree.map(jnp.copy, stacked_params),
                                    jax.tree.map(jnp.copy, stacked_mask),
                                    jnp.zeros((k,), jnp.int32))  # the round donates its state
      return sweep_fn(state, data, num_examples, ids, keys, lr, None)[0].params
    return sweep

  round_fn = federated.make_round_fn(apply_fn, **kw)

  def sequential():
    outs = []
    for mask in mask_list:
      state = federated.ServerState(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, mask),
                                    jnp.int32(0))
      outs.append(round_fn(state, data, num_examples, ids, key, lr, None)[0].params)
    return outs

  ways = [(name, sweep_with(fn)) for name, fn in sweep_fns.items()] + [('sequential', sequential)]
  first = {}
  for name, fn in ways:  # the first call of each compiles
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first[name] = time.perf_counter() - start
  seconds = timing.time_interleaved(dict(ways), _REPEATS.value)
  results = {}
  for name, _ in ways:
    run_s, compile_s = seconds[name], first[name] - seconds[name]
    results[name] = dict(seconds=run_s, compile_seconds=compile_s)
    print(f'{name:10s} {run_s:8.3f} s/round for {k} thresholds  ({run_s / k:.3f} s a threshold)'
          f'  compile {compile_s:6.1f} s')
  # The two must train the same models (up to float rounding of the batched program).
  swept, seq = ways[0][1](), sequential()
  diff = max(float(jnp.max(jnp.abs(a[i] - bb)) / jnp.maximum(jnp.max(jnp.abs(bb)), 1e-12))
             for i in range(k) for a, bb in zip(jax.tree.leaves(swept), jax.tree.leaves(seq[i])))
  speedup = results['sequential']['seconds'] / results['sweep']['seconds']
  print(f'sweep vs sequential speed-up (sequential time / sweep): {speedup:.2f}x')
  print(f'params sweep vs sequential: max |difference| / max |param| of a tensor {diff:.2e}   '
        f'backend: {jax.default_backend()}')
  print(json.dumps(dict(model='cnn', hidden=_HIDDEN.value, tps=tps, clients=c,
                        clients_per_chunk=chunk, thresholds_per_chunk=layouts['sweep'],
                        steps=s, batch=b, epochs=e,
                        backend=jax.default_backend(), sweep_vs_sequential_speedup=speedup,
                        max_relative_param_difference=diff,
                        **{f'{n}_{m}': v for n, r in results.items() for m, v in r.items()})))


if __name__ == '__main__':
  app.run(main)
