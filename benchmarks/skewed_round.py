"""Skewed clients: a round's time and memory in four layouts, side by side in one run.

For the job of `--config` (default: the full Shakespeare LSTM on the embedded plays, whose
largest (play, role) client has 37,287 windows and the median about 1,000), the cohorts of
rounds 1..`--rounds` of seed 0 are trained by FedAvg's jitted round in each layout:

  vmap_largest    the cohort in one vmap, every client padded to the dataset's largest
                  (the layout before issue 16; every client pays for the largest);
  one_largest     one client at a time, padded to the largest: a step of padding alone is skipped
                  (`local.train`), so a client costs its own steps;
  one_cohort      one client at a time, the cohort padded to its own largest client rounded up to
                  a power of two (`pad_steps='cohort'`, the default): smaller arrays, a few shapes;
  one_cohort_cap  the same with `max_local_steps=--cap` (each epoch that many batches sampled).

Per layout: seconds for the rounds (each shape compiled before timing; compile seconds apart),
XLA's memory figure of its largest program (`memory.program_bytes`), and the client-steps it
computes (padded ones included where a vmap cannot skip them) against the steps the clients
really train. `--time_vmapped` also times `vmap_largest` (slow: every padded step runs). The last
line is one JSON object; `cohort_speedup` = one_largest seconds / one_cohort seconds.

  JAX_PLATFORMS=cpu python -m benchmarks.skewed_round --config.local_epochs=1 \\
      --config.model_config.hidden='(64, 64)'
  JAX_PLATFORMS=cpu python -m benchmarks.skewed_round --config=experiments/configs/default.py
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from autoflip_jax import config_checks, memory, schedule
from autoflip_jax import setup as setup_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'experiments/configs/shakespeare_lstm.py',
                                          'The job whose rounds are timed.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Cohorts (rounds 1..N of seed 0) timed per layout.')
_CAP = flags.DEFINE_integer('cap', 4, 'max_local_steps of the one_cohort_cap layout.')
_TIME_VMAPPED = flags.DEFINE_bool('time_vmapped', False, 'Also time vmap_largest (slow).')

LAYOUTS = {'vmap_largest': (0, 'largest', 0), 'one_largest': (1, 'largest', 0),
           'one_cohort': (1, 'cohort', 0), 'one_cohort_cap': (1, 'cohort', None)}


def layout(name: str) -> dict:
  chunk, pad, cap = LAYOUTS[name]
  cap = _CAP.value if cap is None else cap
  config = _CONFIG.value.copy_and_resolve_references()
  config.clients_per_chunk, config.pad_steps, config.max_local_steps = chunk, pad, cap
  config_checks.validate_config(config)
  setup = setup_lib.resolve(config)
  params0 = setup.params0(0)
  fn = setup.round_fn(1, clients_per_chunk=chunk, variants_per_chunk=1)
  state = lambda: setup.server_state([params0])  # a fresh one per call: the round donates it

  sizes = np.asarray(setup.dataset.client_sizes)
  batch = setup.pack.batch_size
  compiled, compile_s, mem, seconds, computed, trained = {}, 0.0, 0, 0.0, 0, 0
  timed = name != 'vmap_largest' or _TIME_VMAPPED.value
  lr = jnp.float32(config.learning_rate)
  rng = jnp.stack([jax.random.key(0)])
  for r in range(1, _ROUNDS.value + 1):
    ids = schedule.sample_clients(0, r, config.num_clients, config.clients_per_round)
    data, n = setup.pack(ids)
    steps = data.y.shape[1]
    own = np.ceil(sizes[ids] / batch).astype(int)
    real = np.minimum(own, cap) if cap else own
    trained += int(real.sum()) * config.local_epochs
    padded = len(ids) * (min(steps, cap) if cap else steps) if chunk == 0 else int(real.sum())
    computed += padded * config.local_epochs
    if steps not in compiled:
      t0 = time.perf_counter()
      compiled[steps] = fn.lower(state(), data, n, ids, rng, lr, None).compile()
      compile_s += time.perf_counter() - t0
      mem = max(mem, memory.program_bytes(compiled[steps]) or 0)
    if timed:
      s = state()
      t0 = time.perf_counter()
      jax.block_until_ready(compiled[steps](s, data, n, ids, rng, lr, None))
      seconds += time.perf_counter() - t0
  row = dict(layout=name, clients_per_chunk=chunk, pad_steps=pad, max_local_steps=cap,
             seconds=seconds if timed else None, compile_seconds=compile_s,
             shapes=sorted(compiled), memory_mib=mem / memory.MIB,
             client_steps_computed=computed, client_steps_trained=trained)
  secs = f'{seconds:8.1f} s' if timed else '   (not timed)'
  print(f'  {name:15s} {secs}  compile {compile_s:5.1f} s  memory {mem / memory.MIB:9.1f} MiB  '
        f'steps computed {computed:6d}, trained {trained:6d}  shapes {sorted(compiled)}')
  return row


def main(argv):
  del argv
  config = _CONFIG.value
  print(f'{config.model} {config.model_config.to_dict()} on {config.data.name}: cohorts of '
        f'{config.clients_per_round}, rounds 1..{_ROUNDS.value} of seed 0, {config.local_epochs} '
        f'epoch(s), batch {config.batch_size}, {jax.default_backend()}')
  rows = [layout(name) for name in LAYOUTS]
  by = {r['layout']: r for r in rows}
  speedup = by['one_largest']['seconds'] / by['one_cohort']['seconds']
  print(f'cohort padding vs padding to the largest (one at a time): {speedup:.2f}x; memory '
        f'{by["one_largest"]["memory_mib"]:.0f} -> {by["one_cohort"]["memory_mib"]:.0f} MiB; '
        f'vmapped, padded to the largest: {by["vmap_largest"]["memory_mib"]:.0f} MiB and '
        f'{by["vmap_largest"]["client_steps_computed"]} client-steps for '
        f'{by["one_cohort"]["client_steps_trained"]} trained')
  print(json.dumps(dict(config=config.model, model_config=config.model_config.to_dict(),
                        backend=jax.default_backend(), rounds=_ROUNDS.value,
                        cohort_speedup=speedup, layouts=rows)))


if __name__ == '__main__':
  app.run(main)
