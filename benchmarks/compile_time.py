"""Compile time of the round program for every CI-sized config, and that it compiles once a run.

For each config (default: every config the tests run, the `:small` variants), the real data is
loaded and one cohort packed exactly as `train.train_and_evaluate` does; then for each distinct
round program of its algorithms (AutoFLIP/FedAvg/controls share one; PruneFL's reports squared
gradients; per-round guidance rebuilds the mask inside) the round is traced, lowered and compiled
ahead of time and timed, and then called for two rounds to check that the jitted round compiled
exactly once (`_cache_size() == 1`: new cohorts, new learning rates and new masks do not retrace).
Prints a table and, as its last line, one JSON object with `max_compile_seconds`.

  JAX_PLATFORMS=cpu python -m benchmarks.compile_time
  JAX_PLATFORMS=cpu python -m benchmarks.compile_time --configs=femnist_cnn:small
"""

from __future__ import annotations

import importlib
import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from autoflip_jax import algorithms, config_checks, federated, masks, schedule
from autoflip_jax import setup as setup_lib

CI_CONFIGS = ('default', 'compare', 'compare:shakespeare', 'cifar10_resnet:small',
              'cifar100_effnet:small', 'femnist_cnn:small', 'shakespeare_lstm:small')
_CONFIGS = flags.DEFINE_list('configs', list(CI_CONFIGS),
                             'experiments/configs modules, with :variant where they have one.')
_LIMIT = flags.DEFINE_float('limit', 60.0, 'Seconds a round may take to compile.')


def load_config(spec: str):
  name, _, arg = spec.partition(':')
  module = importlib.import_module(f'experiments.configs.{name}')
  return module.get_config(arg) if arg else module.get_config()


def programs(setup) -> dict[str, algorithms.Algorithm]:
  """One algorithm per distinct round program: {names: algorithm}."""
  seen = {}
  for name in algorithms.parse(setup.config.algorithm):
    algorithm = algorithms.get(name, setup.config, setup.units)
    key = (algorithm.round_mask is not None, algorithm.track_grad_sq)
    seen.setdefault(key, ([], algorithm))[0].append(name)
  return {','.join(names): algorithm for names, algorithm in seen.values()}


def measure(spec: str) -> list[dict]:
  config = load_config(spec)
  config_checks.validate_config(config)
  setup = setup_lib.resolve(config)
  params0 = setup.params0(config.seed)
  one = lambda tree: jax.tree.map(lambda a: a[None], tree)  # the variant axis of a plain run
  rows = []
  for names, algorithm in programs(setup).items():
    round_fn = federated.make_variant_round_fn(
        setup.apply_fn, num_variants=1, optimizer=config.optimizer,
        local_epochs=config.local_epochs, mask_fn=algorithm.round_mask,
        clients_per_chunk=setup.clients_per_chunk, track_grad_sq=algorithm.track_grad_sq)
    like = algorithm.state_like(setup.context(config.seed), setup.params_like)
    aux = None if like is None else one(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like))

    def args(r):
      ids = schedule.sample_clients(config.seed, r, config.num_clients, config.clients_per_round)
      data, num_examples = setup.pack(ids)
      state = one(federated.ServerState(jax.tree.map(jnp.copy, params0),
                                        masks.ones_mask(params0), jnp.int32(r - 1)))
      lr = jnp.float32(schedule.round_learning_rate(config, r))
      return state, data, num_examples, jnp.asarray(ids), one(jax.random.key(r)), lr, aux

    start = time.perf_counter()
    lowered = round_fn.lower(*args(1))
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - start
    state = args(1)[0]
    for r in (1, 2):  # as the training loop does: each round's output state feeds the next
      state, _ = round_fn(state, *args(r)[1:])
    jax.block_until_ready(state)
    data, _ = setup.pack([0])
    rows.append(dict(config=spec, algorithms=names, model=config.model,
                     clients=config.clients_per_round, steps=int(data.y.shape[1]),
                     batch=config.batch_size, local_epochs=config.local_epochs,
                     trace_lower_seconds=lower_s, compile_seconds=compile_s,
                     total_seconds=lower_s + compile_s, compiles=round_fn._cache_size()))
  return rows


def main(argv):
  del argv
  rows = []
  print(f'{"config":24s} {"algorithms":42s} {"model":16s} {"shape":>18s} {"trace+lower":>11s} '
        f'{"compile":>8s} {"compiles":>8s}')
  for spec in _CONFIGS.value:
    for row in measure(spec):
      rows.append(row)
      shape = f'{row["clients"]}x{row["steps"]}x{row["batch"]}x{row["local_epochs"]}ep'
      print(f'{row["config"]:24s} {row["algorithms"]:42s} {row["model"]:16s} {shape:>18s} '
            f'{row["trace_lower_seconds"]:10.1f}s {row["compile_seconds"]:7.1f}s '
            f'{row["compiles"]:8d}')
  worst = max(r['total_seconds'] for r in rows)
  once = all(r['compiles'] == 1 for r in rows)
  ok = worst < _LIMIT.value and once
  print(f'slowest: {worst:.1f} s (limit {_LIMIT.value:.0f} s); every round compiled once: {once}; '
        f'{"OK" if ok else "NOT MET"}   backend: {jax.default_backend()}')
  print(json.dumps(dict(backend=jax.default_backend(), max_compile_seconds=worst,
                        compiled_once=once, limit_seconds=_LIMIT.value, within_limit=ok,
                        rows=rows)))


if __name__ == '__main__':
  app.run(main)
