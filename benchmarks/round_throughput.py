"""Times one federated round three ways, side by side in one run, and how it scales with cohorts.

Part 1, for each of `--models` (the six-layer CNN, the LSTM):
  (a) ours: the whole round as one jitted program (`federated.make_round_fn`);
  (b) loop: a Python loop over clients of a jitted per-client `local.train`, then FedAvg on the
      host (the FedJAX / Flower pattern);
  (c) central: one model trained on all the cohort's examples, the same number of optimizer steps
      of the same batch size (the hardware's limit for this work).
Part 1 also times our round in the other layout (`ours_vmap` or `ours_1by1`, see
`federated.resolve_chunk`). Part 2, `--cohorts`: our CNN round for cohorts of 10, 100, 1,000
clients, trained in chunks of each of `--cohort_chunks` clients (a scan over vmapped chunks):
time, compile time and XLA's memory figure, next to the memory the same cohort would need in one
vmap (compiled, not run). Part 3, `--reference`: FedAvg's round of a real job (default: the
reference code's MNIST protocol, `mnist_paper.py`: 5 clients x 200 examples x 5 epochs, B = 350
capped at the largest client), its achieved FLOP/s (3 x the forward FLOPs per example, counted by
`accounting.flops_per_example`, x examples x epochs, over the round's seconds) beside the
machine's matmul peak measured in the same run (a square float32 matmul, best of several).

Each way is compiled ahead of time (`jit(...).lower(...).compile()`), so compile time and run time
are separate; run time is the median of `--repeats` calls, the ways timed in turns
(`timing.time_interleaved`). Memory is XLA's buffer assignment
(`compiled.memory_analysis()`: arguments + temporaries + outputs not aliased to arguments), the
same figure on CPU, GPU and TPU; on a GPU also the allocator's peak. The last line is one JSON
object (`round_vs_loop_speedup` = loop time / ours, `round_vs_central_ratio` = ours / central,
for the first model; `reference_gflops`, `matmul_peak_gflops` and their ratio
`reference_fraction_of_peak` from part 3).

  JAX_PLATFORMS=cpu python -m benchmarks.round_throughput
  python -m benchmarks.round_throughput --models=cnn --clients=50 --cohorts=   # GPU, 50 clients
"""

from __future__ import annotations

import contextlib
import functools
import json
import resource
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ml_collections import config_flags

from autoflip_jax import accounting, config_checks, federated, layout, local, masks, models
from autoflip_jax import schedule
from autoflip_jax import setup as setup_lib
from autoflip_jax.models import layers
from benchmarks import timing

_MODELS = flags.DEFINE_list('models', ['cnn', 'lstm'], 'Models for part 1 (cnn, lstm).')
_CLIENTS = flags.DEFINE_integer('clients', 5, 'Clients per round in part 1.')
_STEPS = flags.DEFINE_integer('steps', 7, 'Local steps per epoch per client in part 1.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size.')
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Local epochs in part 1.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per way (median reported).')
_HIDDEN = flags.DEFINE_integer('hidden', 512, 'CNN hidden units (the paper: 512 MNIST).')
_LSTM_HIDDEN = flags.DEFINE_integer('lstm_hidden', 256, 'LSTM units per layer (paper: 256).')
_LSTM_STEPS = flags.DEFINE_integer('lstm_steps', 2, 'Local steps per epoch per client, LSTM.')
_CHUNK = flags.DEFINE_integer('chunk', 0, 'config.clients_per_chunk of our round in part 1 (0: '
                             'auto, federated.resolve_chunk).')
_COHORTS = flags.DEFINE_list('cohorts', ['10', '100', '1000'],
                             'Cohort sizes for part 2 (CNN); empty to skip.')
_COHORT_CHUNKS = flags.DEFINE_list('cohort_chunks', ['1', '50'],
                                   'Clients per chunk in part 2, each timed.')
_COHORT_STEPS = flags.DEFINE_integer('cohort_steps', 1, 'Local steps per client in part 2.')
_COHORT_BATCH = flags.DEFINE_integer('cohort_batch', 16, 'Batch size in part 2.')
_REFERENCE = flags.DEFINE_bool('reference', True, 'Part 3: the real job of --config, FedAvg.')
_CONFIG = config_flags.DEFINE_config_file('config', 'experiments/configs/mnist_paper.py',
                                          'The job of part 3.')
_MATMUL = flags.DEFINE_integer('matmul', 2048, 'Side of the square matmul that measures the peak.')

MIB = 2 ** 20


def setup(name: str, clients: int, steps: int, batch: int, seed: int = 0):
  """(apply_fn, params, ClientData) of random data with the model's input shape."""
  if name == 'cnn':
    config = ml_collections.ConfigDict({'model': 'cnn', 'model_config': {'hidden': _HIDDEN.value}})
    classes, shape, dtype = 10, (28, 28, 1), jnp.float32
  elif name == 'lstm':
    config = ml_collections.ConfigDict(
        {'model': 'lstm', 'model_config': {'hidden': (_LSTM_HIDDEN.value,) * 2}})
    classes, shape, dtype = 80, (80,), jnp.int32
  else:
    raise ValueError(f'--models: {name!r} is not one of cnn, lstm')
  model = models.get_model(config, classes)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + shape, dtype))['params']
  rng = np.random.default_rng(seed)
  lead = (clients, steps, batch)
  x = (rng.random(lead + shape, dtype=np.float32) if dtype == jnp.float32
       else rng.integers(0, classes, lead + shape, dtype=np.int32))
  data = local.ClientData(jnp.asarray(x), jnp.asarray(rng.integers(0, classes, lead),
                                                      dtype=jnp.int32), jnp.ones(lead, bool))
  return (lambda p, x: model.apply({'params': p}, x)), params, data


def memory_mib(compiled) -> float:
  """XLA's buffer figure for one call: arguments + temporaries + outputs not aliased."""
  m = compiled.memory_analysis()
  if m is None:
    return float('nan')
  total = (m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
           - m.alias_size_in_bytes)
  return total / MIB


def aot(fn, *args):
  """(compiled, compile seconds) of a jitted function for these arguments."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def fresh_state(params, mask):
  # The round donates its state, so every call gets its own copy.
  return federated.ServerState(jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, mask),
                               jnp.int32(0))


def three_ways(name: str) -> dict:
  """Part 1 for one model: ours, loop, central; seconds, client-steps/s, compile, memory."""
  c, b, e = _CLIENTS.value, _BATCH.value, _EPOCHS.value
  s = _LSTM_STEPS.value if name == 'lstm' else _STEPS.value
  apply_fn, params, data = setup(name, c, s, b)
  mask = masks.ones_mask(params)
  num_examples = jnp.full((c,), s * b, jnp.int32)
  ids, key, lr = jnp.arange(c), jax.random.key(1), jnp.float32(0.05)
  client_steps = c * s * e
  train = lambda p, d, k: local.train(p, mask, d, k, apply_fn=apply_fn, optimizer='sgd',
                                      learning_rate=lr, epochs=e).params

  chunk = federated.resolve_chunk(_CHUNK.value,
                                  vmap_on_cpu=name in models.VMAP_CLIENTS_ON_CPU)
  round_args = (data, num_examples, ids, key, lr, None)
  # Ours as a run would pick it, and the other layout beside it (one vmap <-> one at a time).
  other = ('ours_1by1', 1) if chunk == 0 else ('ours_vmap', 0)
  ours = {}
  for way, k in (('ours', chunk), other):
    fn = federated.make_round_fn(apply_fn, optimizer='sgd', local_epochs=e, clients_per_chunk=k)
    ours[way] = aot(fn, fresh_state(params, mask), *round_args)
  one = jax.tree.map(lambda a: a[0], data)
  client_c, loop_compile = aot(layout.jit(train), params, one, key)
  central_data = jax.tree.map(lambda a: a.reshape((c * s,) + a.shape[2:]), data)
  central_c, central_compile = aot(layout.jit(train), params, central_data, key)

  def loop():
    outs = [client_c(params, jax.tree.map(lambda a: a[i], data), jax.random.fold_in(key, i))
            for i in range(c)]
    return jax.tree.map(lambda *ps: sum(ps) / c, *outs)

  run = lambda compiled: lambda: compiled(fresh_state(params, mask), *round_args)[0].params
  ways = {
      **{way: (run(compiled), compile_s, memory_mib(compiled))
         for way, (compiled, compile_s) in ours.items()},
      'loop': (loop, loop_compile, memory_mib(client_c)),
      'central': (lambda: central_c(params, central_data, key), central_compile,
                  memory_mib(central_c)),
  }
  seconds = timing.time_interleaved({way: fn for way, (fn, _, _) in ways.items()},
                                    _REPEATS.value)
  results = {}
  print(f'\n{name}: {c} clients x {s} steps x batch {b} x {e} epochs '
        f'({client_steps} client-steps a round); ours: clients_per_chunk={_CHUNK.value} -> '
        f'{chunk} on {jax.default_backend()}')
  for way, (_, compile_s, mem) in ways.items():
    run_s = seconds[way]
    results[way] = dict(seconds=run_s, compile_seconds=compile_s,
                        client_steps_per_s=client_steps / run_s, memory_mib=mem)
    print(f'  {way:9s} {run_s:8.3f} s/round  {client_steps / run_s:8.1f} client-steps/s  '
          f'compile {compile_s:5.1f} s  memory {mem:8.1f} MiB')
  speedup = results['loop']['seconds'] / results['ours']['seconds']
  ratio = results['ours']['seconds'] / results['central']['seconds']
  print(f'  round vs loop speed-up (loop time / ours): {speedup:.2f}x')
  print(f'  round vs central ratio (ours / central):   {ratio:.2f}x')
  return dict(model=name, clients=c, steps=s, batch=b, epochs=e, clients_per_chunk=chunk,
              round_vs_loop_speedup=speedup, round_vs_central_ratio=ratio,
              **{f'{w}_{k}': v for w, r in results.items() for k, v in r.items()})


def cohort_scaling() -> list[dict]:
  """Part 2: our CNN round for growing cohorts, chunked, with the one-vmap memory beside it."""
  s, b = _COHORT_STEPS.value, _COHORT_BATCH.value
  rows = []
  print(f'\ncohorts (cnn, {s} step(s) x batch {b} x 1 epoch per client)')
  for cohort in (int(v) for v in _COHORTS.value):
    apply_fn, params, data = setup('cnn', cohort, s, b)
    mask = masks.ones_mask(params)
    args = (data, jnp.full((cohort,), s * b, jnp.int32), jnp.arange(cohort), jax.random.key(1),
            jnp.float32(0.05), None)
    whole = federated.make_round_fn(apply_fn, optimizer='sgd', local_epochs=1)
    whole_mem = memory_mib(whole.lower(fresh_state(params, mask), *args).compile())
    for chunk in sorted({min(int(v), cohort) for v in _COHORT_CHUNKS.value}):
      round_fn = federated.make_round_fn(apply_fn, optimizer='sgd', local_epochs=1,
                                         clients_per_chunk=chunk)
      compiled, compile_s = aot(round_fn, fresh_state(params, mask), *args)
      _, run_s = timing.time_call(lambda: compiled(fresh_state(params, mask), *args)[0].params,
                                  1)
      row = dict(clients=cohort, clients_per_chunk=chunk, seconds=run_s,
                 compile_seconds=compile_s, client_steps_per_s=cohort * s / run_s,
                 memory_mib=memory_mib(compiled), one_vmap_memory_mib=whole_mem)
      rows.append(row)
      print(f'  {cohort:5d} clients, chunks of {chunk:4d}  {run_s:8.2f} s/round  '
            f'{row["client_steps_per_s"]:7.1f} client-steps/s  compile {compile_s:5.1f} s  '
            f'memory {row["memory_mib"]:8.1f} MiB (one vmap: {whole_mem:8.1f} MiB)')
    data = args = None  # frees the cohort's arrays (a `del` would leave the lambda above undefined)
  return rows


def matmul_peak(n: int, repeats: int = 10) -> float:
  """GFLOP/s of the best of `repeats` float32 [n, n] x [n, n] matmuls: the machine's limit."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a).lower(a).compile()
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best / 1e9


def reference_round() -> dict:
  """Part 3: FedAvg's round of the real job of --config, its FLOP/s and the matmul peak; the
  round as the models run now (`conv_impl` auto) beside the same round with every convolution
  as patches times a matmul (`patches`, the way before native convolutions on a CPU)."""
  config = _CONFIG.value
  config_checks.validate_config(config)
  setup = setup_lib.resolve(config)
  params0 = setup.params0(0)
  ids = schedule.sample_clients(0, 1, config.num_clients, config.clients_per_round)
  data, n = setup.pack(ids)
  state = lambda: setup.server_state([params0])  # a fresh one per call: the round donates it

  args = (data, n, ids, jnp.stack([jax.random.key(0)]), jnp.float32(config.learning_rate), None)
  example = jax.ShapeDtypeStruct((1,) + data.x.shape[3:], data.x.dtype)
  ways, compile_s, counted = {}, {}, {}
  for way in ('auto', 'xla_defaults', 'patches'):
    # Traced (and so built) under the way's conv_impl and XLA options; a new jit per way.
    impl = 'patches' if way == 'patches' else 'auto'
    options = layout.xla_defaults() if way == 'xla_defaults' else contextlib.nullcontext()
    with layers.conv_impl(impl), options:
      compiled, compile_s[way] = aot(setup.round_fn(1), state(), *args)
      # What XLA counts for one example's forward pass: the native convolution skips the
      # kernel taps on the zero padding, which the nominal count (and the patches) keep. A new
      # function per way: jit would reuse the trace of an earlier jit of the same one.
      cost = layout.jit(lambda p, x: setup.apply_fn(p, x)).lower(params0, example).compile()
      cost = cost.cost_analysis()
    counted[way] = (cost[0] if isinstance(cost, list) else cost)['flops']
    ways[way] = functools.partial(lambda c: c(state(), *args), compiled)
  seconds = timing.time_interleaved(ways, _REPEATS.value)
  forward = accounting.flops_per_example(params0, None, setup.positions, 'dense')
  examples = int(np.sum(n)) * config.local_epochs
  flops = 3 * forward * examples
  peak = matmul_peak(_MATMUL.value)
  gflops = {way: flops / seconds[way] / 1e9 for way in ways}
  print(f'\nreference round ({config.model}, {config.data.name}): {len(ids)} clients, '
        f'{int(np.sum(n))} examples x {config.local_epochs} epochs, batch {data.y.shape[-1]} '
        f'(config {config.batch_size}), {data.y.shape[-2]} step(s) an epoch, '
        f'{flops:.3g} FLOPs (3 x {forward:,} per example x {examples:,}); matmul peak '
        f'{peak:.1f} GFLOP/s ({_MATMUL.value}^2 float32)')
  names = {'auto': 'ours (native convs on a CPU)', 'xla_defaults': "same, XLA's default options",
           'patches': 'all convs as patches'}
  for way in ways:
    name = names[way]
    print(f'  {name:30s} {seconds[way]:.3f} s/round  {gflops[way]:.1f} GFLOP/s  '
          f'{gflops[way] / peak:.2f} of peak  compile {compile_s[way]:.1f} s  (XLA counts '
          f'{counted[way] / forward:.3f} of the nominal forward FLOPs: '
          f'{gflops[way] * counted[way] / forward / peak:.2f} of peak)')
  print(f'  speed-up of ours over patches: {seconds["patches"] / seconds["auto"]:.2f}x, over '
        f'XLA\'s default options (YNNPACK convolutions, layout.compiler_options): '
        f'{seconds["xla_defaults"] / seconds["auto"]:.2f}x')
  return dict(model=config.model, dataset=config.data.name, clients=len(ids),
              examples=int(np.sum(n)), epochs=config.local_epochs, batch=int(data.y.shape[-1]),
              seconds=seconds['auto'], compile_seconds=compile_s['auto'], flops=flops,
              reference_gflops=gflops['auto'], matmul_peak_gflops=peak,
              reference_fraction_of_peak=gflops['auto'] / peak,
              patches_seconds=seconds['patches'], patches_gflops=gflops['patches'],
              patches_fraction_of_peak=gflops['patches'] / peak,
              speedup_over_patches=seconds['patches'] / seconds['auto'],
              xla_defaults_seconds=seconds['xla_defaults'],
              xla_defaults_fraction_of_peak=gflops['xla_defaults'] / peak,
              speedup_over_xla_defaults=seconds['xla_defaults'] / seconds['auto'],
              xla_forward_flops={way: counted[way] for way in ways})


def main(argv):
  del argv
  parts = [three_ways(name) for name in _MODELS.value]
  cohorts = cohort_scaling() if _COHORTS.value else []
  reference = reference_round() if _REFERENCE.value else {}
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  device_peak = (stats or {}).get('peak_bytes_in_use', 0) / MIB
  print(f'\npeak host memory (process): {peak:.0f} MiB   device peak: {device_peak:.0f} MiB   '
        f'backend: {jax.default_backend()} ({device.device_kind}, {jax.device_count()} device(s))')
  first = parts[0] if parts else {}
  print(json.dumps(dict(
      backend=jax.default_backend(), device=device.device_kind,
      round_vs_loop_speedup=first.get('round_vs_loop_speedup'),
      round_vs_central_ratio=first.get('round_vs_central_ratio'),
      reference_gflops=reference.get('reference_gflops'),
      matmul_peak_gflops=reference.get('matmul_peak_gflops'),
      reference_fraction_of_peak=reference.get('reference_fraction_of_peak'),
      reference_patches_fraction_of_peak=reference.get('patches_fraction_of_peak'),
      models=parts, cohorts=cohorts, reference=reference, peak_host_mib=peak,
      device_peak_mib=device_peak)))


if __name__ == '__main__':
  app.run(main)
