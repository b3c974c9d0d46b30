"""Does AutoFLIP's mask make a federated round cheaper? FedAvg's round and AutoFLIP's, side by side.

For the job of `--config` (default: the default job; `--config=...:small` for the paper models'
CI sizes): the real data and model (`setup.resolve`), θ0 of `--seed`, AutoFLIP's real
exploration and hybrid mask at the config's Tp and structured rule (`algorithms.autoflip.init`),
then the jitted round the runner compiles for each (`federated.make_variant_round_fn`):

  fedavg         the dense model (the all-True mask);
  autoflip       the shrunk model the runner trains once the mask is fixed (`shrink.plan`, the
                 units the mask removed sliced away; `config.shrunk_rounds`);
  autoflip_full  the same mask on the full model (`--config.shrunk_rounds=False`): the masked
                 round that multiplies zeros, for reference.

All three train the same cohort (the clients of round 1 for the seed) from the same θ0, with the
same learning rate; each is compiled first (its compile time reported apart), then timed
`--repeats` times in turns (`timing.time_interleaved`), median reported. The last line is one
JSON object with `flops_ratio` (dense / structured FLOPs per example, `accounting`) and
`round_speedup` (FedAvg round seconds / AutoFLIP's). Goal on a CPU (issue 14):
round_speedup >= 0.7 x flops_ratio.

  JAX_PLATFORMS=cpu python -m benchmarks.pruned_round
  JAX_PLATFORMS=cpu python -m benchmarks.pruned_round --config=experiments/configs/cifar10_resnet.py:small
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from autoflip_jax import accounting, algorithms, config_checks, masks, schedule
from autoflip_jax import setup as setup_lib
from autoflip_jax import shrink
from autoflip_jax.models import layers
from benchmarks import timing

_CONFIG = config_flags.DEFINE_config_file('config', 'experiments/configs/default.py',
                                          'The job whose round is timed.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds of each (median reported).')
_SEED = flags.DEFINE_integer('seed', 0, 'θ0, explorers and the cohort.')


def _round(setup, plan):
  return setup.round_fn(1, shrink_plan=plan)


def main(argv):
  del argv
  config = _CONFIG.value
  config_checks.validate_config(config)
  setup = setup_lib.resolve(config)
  seed = _SEED.value
  params0 = setup.params0(seed)
  start = time.time()
  autoflip = algorithms.get('autoflip', config, setup.units)
  mask = autoflip.init(setup.context(seed), params0, jax.random.fold_in(jax.random.key(seed), 2),
                       (config.tp,))[0].mask
  explore_s = time.time() - start
  plan = shrink.plan(setup.model, jax.tree.map(jnp.asarray, mask),
                     align=layers.unit_alignment())  # as the runner (train.shrink_plan)
  dense_mask = masks.ones_mask(params0)
  ids = schedule.sample_clients(seed, 1, config.num_clients, config.clients_per_round)
  data, n = setup.pack(ids)
  rng = jnp.stack([jax.random.key(seed)])
  lr = jnp.float32(config.learning_rate)

  state = lambda m: setup.server_state([params0], [m])

  fns = {'fedavg': (_round(setup, None), dense_mask),
         'autoflip': (_round(setup, plan if plan.removes_any else None), mask),
         'autoflip_full': (_round(setup, None), mask)}
  compile_s, calls = {}, {}
  for name, (fn, m) in fns.items():
    t0 = time.time()
    compiled = fn.lower(state(m), data, n, ids, rng, lr, None).compile()
    compile_s[name] = time.time() - t0
    # A fresh state each call: the round donates (consumes) the one it is given.
    calls[name] = lambda c=compiled, m=m: c(state(m), data, n, ids, rng, lr, None)
  seconds = timing.time_interleaved(calls, _REPEATS.value)
  positions = setup.positions
  flops = {mode: accounting.flops_per_example(params0, mask, positions, mode)
           for mode in ('dense', 'structured', 'sparse')}
  units = masks.unit_counts(mask, setup.units)
  row = dict(
      config=config.model, model_config=config.model_config.to_dict(), tp=config.tp,
      structured_rule=config.structured_rule, clients=len(ids), examples=int(n.sum()),
      local_epochs=config.local_epochs, batch_size=config.batch_size,
      backend=jax.default_backend(), device=jax.devices()[0].device_kind,
      units={k: f'{a}/{b}' for k, (a, b) in units.items()},
      params_dense=accounting.total_params(params0),
      params_shrunk=shrink.shrunk_params(mask, setup.units)[0],
      params_kept=accounting.kept_params(mask),
      flops_dense=flops['dense'], flops_structured=flops['structured'],
      flops_sparse=flops['sparse'], flops_ratio=flops['dense'] / flops['structured'],
      round_seconds=seconds, compile_seconds=compile_s, exploration_seconds=explore_s,
      round_speedup=seconds['fedavg'] / seconds['autoflip'],
      round_speedup_masked_full=seconds['fedavg'] / seconds['autoflip_full'],
      repeats=_REPEATS.value)
  row['speedup_over_flops_ratio'] = row['round_speedup'] / row['flops_ratio']
  print(f'{config.model} {row["units"]}: params {row["params_dense"]:,} -> shrunk '
        f'{row["params_shrunk"]:,} (kept {row["params_kept"]:,}); FLOPs/ex '
        f'{flops["dense"]:,} -> {flops["structured"]:,} ({row["flops_ratio"]:.2f}x)')
  for name, s in seconds.items():
    print(f'  {name:14s} round {s:8.3f} s   compile {compile_s[name]:6.1f} s')
  print(f'round_speedup {row["round_speedup"]:.2f}x vs flops_ratio {row["flops_ratio"]:.2f}x '
        f'(ratio {row["speedup_over_flops_ratio"]:.2f}; goal >= 0.7); masked full model '
        f'{row["round_speedup_masked_full"]:.2f}x; {len(ids)} clients, {int(n.sum())} examples, '
        f'{jax.default_backend()}, median of {_REPEATS.value}')
  print(json.dumps(row))


if __name__ == '__main__':
  app.run(main)
