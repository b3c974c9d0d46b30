"""`train_and_evaluate(config, workdir)`: the one runner, from config to metrics, table and plots.

Data walks one way: config -> `setup.resolve` (validated once, data, model) -> for each
algorithm: `Algorithm.init` (exploration, first mask) -> per round: sample -> pack -> ONE
jitted round -> evaluate -> `metrics.jsonl` -> checkpoint. After every algorithm:
`summary.json`, the printed table and plots.

Variants. Every algorithm runs as a set of variants on a leading axis of its state: a plain
run is one variant; `config.seeds='0,1,2'` adds one per training seed (own θ0, explorers,
cohorts and keys; the data split follows `config.seed`); `config.tp_sweep='0.1,0.3'` adds one
per threshold to AutoFLIP (one exploration per seed, one mask per Tp; rows named
`autoflip_tp<Tp>`). All variants of an algorithm train in the same jitted round
(`federated.make_variant_round_fn`: vmapped on accelerators, one after another inside the
program on a CPU), share one checkpoint and resume together. A variant's rows equal a separate
run with that seed and threshold (tests/test_variants.py).

Rounds whose mask is fixed train the physically smaller model (`config.shrunk_rounds`,
`runs_shrunk`): the round is compiled for the `shrink.plan` of the mask (one program per distinct
shrunk shape; on the CPU layout one per variant, `split_round`) and equals masked full-model
training up to float rounding.

The state that travels from round to round is a `RunState`: the server state and the
algorithm's own arrays (leading variant axis, on the device) and one `logbook.Ledger` of
running totals per variant (host). A checkpoint holds all of it, so a rerun of the same command
resumes exactly. Host bookkeeping (rows, traffic, progress line, TensorBoard, plots) is in
`logbook.py`; placement on the mesh in `sharding.py`.

Multi-process runs (`autoflip_jax/distributed.py`): every process runs this same job; process 0
alone writes the files (`sharding.is_writer`) except the orbax checkpoints, which every process
saves together.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import algorithms, checkpoint, config_checks, federated, logbook, report
from autoflip_jax import memory, privacy, schedule, sharding, shrink
from autoflip_jax import data as data_lib
from autoflip_jax import setup as setup_lib
from autoflip_jax.algorithms import Algorithm
from autoflip_jax.data import stats
from autoflip_jax.logbook import Ledger
from autoflip_jax.masks import apply_mask, rescale_fan_in
from autoflip_jax.models import layers

PyTree = Any
SWEEP_CHECKPOINT = 'autoflip_sweep'  # checkpoints/<this>: a Tp sweep's stacked state


@dataclasses.dataclass(frozen=True)
class Variant:
  """One run on the variant axis: its rows' algorithm name, training seed and threshold."""
  name: str
  seed: int
  tp: float | None = None  # set for the variants of a Tp sweep


class RunState(NamedTuple):
  """Everything that travels from round to round, for every variant of one algorithm."""
  server: federated.ServerState  # params, mask, round: leading variant axis
  algo: PyTree                   # the algorithm's arrays, leading variant axis (None: none)
  ledgers: tuple[Ledger, ...]    # host totals, one per variant


def sweep_name(tp: float) -> str:
  """The algorithm name of one threshold's rows: `autoflip_tp0.1`."""
  return f'autoflip_tp{tp:g}'


def variants_for(algorithm: Algorithm, setup: setup_lib.Setup) -> list[Variant]:
  """The algorithm's variants: seeds, times thresholds for a Tp sweep (seed-major order)."""
  if algorithm.sweeps_tp and setup.tps:
    return [Variant(sweep_name(tp), s, tp) for s in setup.seeds for tp in setup.tps]
  return [Variant(algorithm.name, s) for s in setup.seeds]


def checkpoint_name(algorithm: Algorithm, setup: setup_lib.Setup) -> str:
  """The folder under `checkpoints/` (and the key in `progress.json`) of an algorithm's run."""
  return SWEEP_CHECKPOINT if algorithm.sweeps_tp and setup.tps else algorithm.name


def label(variant: Variant, setup: setup_lib.Setup) -> str:
  """How the log names a variant: its algorithm, and its seed when there are several."""
  return variant.name if len(setup.seeds) == 1 else f'{variant.name} seed {variant.seed}'


def ckpt_tree(state: RunState) -> dict:
  """The checkpointed arrays of a run (`checkpoint.Checkpointer`)."""
  tree = {'params': state.server.params, 'mask': state.server.mask, 'round': state.server.round}
  if jax.tree.leaves(state.server.server_opt):
    tree['server_opt'] = state.server.server_opt
  if state.algo is not None:
    tree['algo'] = state.algo
  return tree


def ckpt_meta(variants: Sequence[Variant], state: RunState) -> dict:
  """The checkpoint's JSON: every variant and its running totals."""
  return {'variants': [dict(dataclasses.asdict(v), ledger=l.to_json())
                       for v, l in zip(variants, state.ledgers)]}


def _by_seed(variants: Sequence[Variant]) -> dict[int, list[int]]:
  """{seed: indices of its variants}, seeds in variant order."""
  groups: dict[int, list[int]] = {}
  for i, v in enumerate(variants):
    groups.setdefault(v.seed, []).append(i)
  return groups


def start_run(setup: setup_lib.Setup, algorithm: Algorithm, variants: Sequence[Variant],
              writer: logbook.MetricsWriter, earlier: Sequence[dict]) -> RunState:
  """Round 0: each seed's θ0 and the algorithm's `init`, evaluated and written as round 0."""
  params0, starts = [None] * len(variants), [None] * len(variants)
  for seed, idx in _by_seed(variants).items():
    p0 = setup.start_params(seed)
    tps = [variants[i].tp if variants[i].tp is not None else setup.config.tp for i in idx]
    out = algorithm.init(setup.context(seed, earlier), p0, setup_lib.init_key(seed), tps)
    for i, start in zip(idx, out):
      params0[i], starts[i] = p0 if start.params is None else start.params, start
      if setup.config.sparse_init == 'fan_in':
        params0[i] = rescale_fan_in(params0[i], start.mask)  # sparse initialisation: θ0 only
  ledgers = []
  for v, p0, start in zip(variants, params0, starts):
    if start.info:
      logging.info('[%s] before round 1: %s in %.1f s', label(v, setup), start.info,
                   start.seconds)
    ledger = logbook.start_ledger(start, *setup.evaluate(apply_mask(p0, start.mask)))
    writer.reset(v.name, v.seed, -1)
    costs = logbook.cost_fields(p0, start.mask, setup.positions, setup.units)
    writer.write(logbook.initial_row(v.name, v.seed, ledger, costs))
    ledgers.append(ledger)
  server_state = setup.server_state(params0, [s.mask for s in starts])
  algo = None if starts[0].state is None else federated.stack([s.state for s in starts])
  return RunState(server_state, algo, tuple(ledgers))


def restore_run(setup: setup_lib.Setup, algorithm: Algorithm, variants: Sequence[Variant],
                ckpt: checkpoint.Checkpointer, round_num: int) -> RunState:
  """The run's state from its checkpoint of `round_num`."""
  k = len(variants)
  like = RunState(
      jax.eval_shape(lambda p: setup.server_state([p] * k), setup.params_like),
      algorithm.state_like(setup.context(variants[0].seed), setup.params_like), ())
  if like.algo is not None:
    like = like._replace(algo=jax.tree.map(
        lambda p: jax.ShapeDtypeStruct((k,) + p.shape, p.dtype), like.algo))
  tree, meta = ckpt.restore(round_num, ckpt_tree(like))
  saved = [Variant(**{f: d[f] for f in ('name', 'seed', 'tp')}) for d in meta['variants']]
  if saved != list(variants):
    raise checkpoint.CheckpointError(
        f'the checkpoint of round {round_num} holds the variants {saved}, not {list(variants)}')
  opt = tree.get('server_opt', like.server.server_opt)
  return RunState(federated.ServerState(tree['params'], tree['mask'], tree['round'], opt),
                  tree.get('algo'),
                  tuple(Ledger.from_json(d['ledger']) for d in meta['variants']))


def _cohort(setup: setup_lib.Setup, variants: Sequence[Variant], round_num: int):
  """The round's (data, num_examples, client ids): shared, or one cohort per variant's seed."""
  config = setup.config
  seeds = list(_by_seed(variants))
  ids = {s: schedule.sample_clients(s, round_num, config.num_clients, config.clients_per_round)
         for s in seeds}
  if len(seeds) == 1:
    data, n = setup.pack(ids[seeds[0]])
    return (data, n, sharding.shard_clients(ids[seeds[0]], setup.mesh)), [ids[seeds[0]]] * len(
        variants)
  steps = max(setup.pack.steps_for(i) for i in ids.values())  # one shape for the stacked cohorts
  packed = {s: setup.pack(ids[s], place=False, steps=steps) for s in seeds}
  per_variant = [packed[v.seed] for v in variants]
  data = jax.tree.map(lambda *xs: np.stack(xs), *[p[0] for p in per_variant])
  n = np.stack([p[1] for p in per_variant])
  variant_ids = [ids[v.seed] for v in variants]
  cohort = sharding.shard_clients((data, n, np.stack(variant_ids)), setup.mesh, axis=1)
  return cohort, variant_ids


def run_algorithm(setup: setup_lib.Setup, algorithm: Algorithm, *,
                  writer: logbook.MetricsWriter, ckpt: checkpoint.Checkpointer,
                  earlier: Sequence[dict] = ()) -> list[dict]:
  """Runs (or resumes) every variant of `algorithm` to `config.num_rounds`; their summary rows.

  `earlier`: the summary rows of the algorithms run before it (`algorithms.Context.earlier`).
  """
  config = setup.config
  variants = variants_for(algorithm, setup)
  start_round = ckpt.latest_round()
  if start_round is None:
    state = start_run(setup, algorithm, variants, writer, earlier)
    start_round = 0
    ckpt.maybe_save(0, ckpt_tree(state), ckpt_meta(variants, state), force=True)
  else:
    state = restore_run(setup, algorithm, variants, ckpt, start_round)
    for v in variants:
      writer.reset(v.name, v.seed, start_round)
    logging.info('[%s] resumed from the checkpoint of round %d', checkpoint_name(algorithm, setup),
                 start_round)

  k = len(variants)
  # The round counter too: a host-local counter next to mesh-placed params would compile the
  # round a second time from round 2 on.
  server = sharding.replicate(state.server, setup.mesh)
  algo = sharding.replicate(state.algo, setup.mesh)
  ledgers = list(state.ledgers)
  round_fns = {}
  per_variant_data = len(_by_seed(variants)) > 1

  def round_fn_for(plan, num_variants=k):
    """The jitted round for a shrinking plan (None: the full model), compiled once per shape."""
    key = (None if plan is None else plan.key, num_variants)
    if key not in round_fns:
      if plan is not None:
        logging.info('[%s] rounds run the shrunk model: %s', checkpoint_name(algorithm, setup),
                     ', '.join(f'{n} {len(i)}' for n, i in plan.kept.items()))
      round_fns[key] = setup.round_fn(
          num_variants, mask_fn=algorithm.round_mask, track_grad_sq=algorithm.track_grad_sq,
          per_variant_data=per_variant_data, shrink_plan=plan)
    return round_fns[key]

  def make_round(mask):
    """The round for these masks: one program for every variant (the shrunk model of the
    units all of them removed), or, on the CPU layout where variants run one after another
    anyway, one program per variant with its own shrunk model (`split_round`)."""
    if not runs_shrunk(config, algorithm):
      return round_fn_for(None)
    if k > 1 and setup.variants_per_chunk == 1 and setup.mesh is None:
      plans = [shrink_plan(setup, jax.tree.map(lambda m: m[i:i + 1], mask)) for i in range(k)]
      return functools.partial(split_round, [round_fn_for(p, 1) for p in plans],
                               per_variant_data)
    return round_fn_for(shrink_plan(setup, mask))

  round_fn = make_round(server.mask)
  train_rngs = sharding.replicate(
      jnp.stack([jax.random.fold_in(jax.random.key(v.seed), 1) for v in variants]), setup.mesh)
  params_like = setup.params_like
  costs = [logbook.cost_fields(params_like, federated.unstack(server.mask, i), setup.positions,
                               setup.units) for i in range(k)]
  start = time.time()
  for r in range(start_round + 1, config.num_rounds + 1):
    t0 = time.time()
    cohort, ids = _cohort(setup, variants, r)
    lr = schedule.round_learning_rate(config, r)
    server, met = round_fn(server, *cohort, train_rngs, jnp.float32(lr),
                           algo if algorithm.round_mask else None)
    train_losses = np.asarray(sharding.host_value(met.train_loss))
    round_seconds = time.time() - t0
    if not np.all(np.isfinite(train_losses)):  # the clients' losses only to name the culprits
      client_losses = sharding.host_value(met.client_loss)
      for i, v in enumerate(variants):
        if ledgers[i].diverged_round:
          continue  # recorded already (on_divergence=record): NaN stays NaN
        if logbook.check_finite(label(v, setup), r, float(train_losses[i]), client_losses[i],
                                ids[i], ckpt.latest_round(),
                                record=config.on_divergence == 'record'):
          ledgers[i] = dataclasses.replace(ledgers[i], diverged_round=r)
    # What each variant's clients received this round: its mask then (the round's own mask
    # when the round built one), and the mask's bitmap while it was new to them.
    fields, traffic = [], []
    for i in range(k):
      mask_is_new = ledgers[i].mask_is_new
      if algorithm.round_mask is not None:
        costs[i] = logbook.cost_fields(params_like, federated.unstack(server.mask, i),
                                       setup.positions, setup.units)
        mask_is_new = True
      fields.append(costs[i])
      traffic.append(logbook.round_traffic(costs[i], len(ids[i]), mask_is_new))
    new_masks = [None] * k
    if algorithm.update is not None:
      server, algo, new_masks = _update(algorithm, r, server, algo, met, setup.mesh)
      if any(m is not None for m in new_masks):
        round_fn = make_round(server.mask)
    for i, v in enumerate(variants):
      t1 = time.time()
      up, down = traffic[i]
      mask_is_new = new_masks[i] is not None  # the next round's clients need the new bitmap
      if mask_is_new:
        costs[i] = logbook.cost_fields(params_like, new_masks[i], setup.positions, setup.units)
      evaluation = None
      if schedule.eval_due(config, r):
        evaluation = setup.evaluate(federated.unstack(server.params, i))
      ledgers[i] = logbook.after_round(ledgers[i], up, down, mask_is_new, evaluation)
      writer.write(logbook.round_row(v.name, v.seed, r, ledgers[i], float(train_losses[i]),
                                     fields[i], up, down, lr, round_seconds + time.time() - t1,
                                     training_epsilon(config, r)))
      done = r - start_round
      logbook.log_round(label(v, setup), r, config.num_rounds, ledgers[i],
                        float(train_losses[i]), fields[i], up, down,
                        done / (time.time() - start),
                        (time.time() - start) / done * (config.num_rounds - r))
    state = RunState(server, algo, tuple(ledgers))
    ckpt.maybe_save(r, ckpt_tree(state), ckpt_meta(variants, state),
                    force=r == config.num_rounds)
    if r % config.checkpoint_every == 0:  # plots a person can watch while the run goes on
      writer.plot()
  rows = []
  for i, v in enumerate(variants):
    row = logbook.summary_row(v.name, v.seed, ledgers[i], params_like,
                              federated.unstack(server.mask, i), setup.positions, setup.units)
    if config.dp.noise_multiplier > 0:
      row['epsilon'] = training_epsilon(config, config.num_rounds)
    rows.append(row if v.tp is None else dict(row, tp=v.tp))
  return rows


def runs_shrunk(config, algorithm: Algorithm) -> bool:
  """Whether the algorithm's rounds train the shrunk model (`config.shrunk_rounds`): only where
  that equals masked full-model training (`federated.make_variant_round_fn`)."""
  return bool(config.shrunk_rounds and algorithm.round_mask is None
              and not algorithm.track_grad_sq and config.dp.noise_multiplier <= 0)


def split_round(fns: Sequence, per_variant_data: bool, server: federated.ServerState, data,
                num_examples, client_ids, rngs, learning_rate, aux):
  """A variant round as one program per variant (`fns[i]`, one variant each), restacked."""
  outs = []
  for i, fn in enumerate(fns):
    one = lambda t: jax.tree.map(lambda a: a[i:i + 1], t)
    cohort = (data, num_examples, client_ids)
    outs.append(fn(one(server), *(one(cohort) if per_variant_data else cohort), rngs[i:i + 1],
                   learning_rate, None if aux is None else one(aux)))
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


def shrink_plan(setup: setup_lib.Setup, stacked_mask: PyTree) -> shrink.Plan | None:
  """The shrinking every variant's mask allows (a unit goes when it is dead in all of them);
  None when no unit goes (the full round, no second compile)."""
  union = jax.tree.map(lambda m: np.any(np.asarray(sharding.host_value(m)), axis=0),
                       stacked_mask)
  plan = shrink.plan(setup.model, union, align=layers.unit_alignment())
  return plan if plan.removes_any else None


def training_epsilon(config, rounds: int) -> float | None:
  """DP-FedAvg's ε after `rounds` rounds at `config.dp.delta` (None when training is not
  private); a function of the round number alone, so a resumed run reports the same."""
  if config.dp.noise_multiplier <= 0:
    return None
  return privacy.training_epsilon(float(config.dp.noise_multiplier),
                                  config.clients_per_round / config.num_clients, rounds,
                                  float(config.dp.delta))


def _update(algorithm: Algorithm, round_num: int, server: federated.ServerState, algo: PyTree,
            metrics: federated.RoundMetrics, mesh):
  """The algorithm's host step after a round, variant by variant; the new masks (or None)."""
  k = server.round.shape[0]
  params = [federated.unstack(server.params, i) for i in range(k)]
  masks = [federated.unstack(server.mask, i) for i in range(k)]
  states, new_masks, state_changed = [], [], False
  for i in range(k):
    met = jax.tree.map(lambda a: a[i], metrics)
    old_state = None if algo is None else federated.unstack(algo, i)
    new_mask, state_i = algorithm.update(round_num, params[i], masks[i], met, old_state)
    if new_mask is not None:
      masks[i], params[i] = new_mask, apply_mask(params[i], new_mask)
    state_changed |= state_i is not old_state
    states.append(state_i)
    new_masks.append(new_mask)
  if any(m is not None for m in new_masks):
    server = server._replace(params=sharding.replicate(federated.stack(params), mesh),
                             mask=sharding.replicate(federated.stack(masks), mesh))
  if states[0] is not None and state_changed:  # a state handed back as it came is not restacked
    algo = sharding.replicate(federated.stack(states), mesh)
  return server, algo, new_masks


def _config_dict(config) -> dict:
  return json.loads(json.dumps(config.to_dict(), default=str))


def train_and_evaluate(config, workdir: str) -> list[dict]:
  """Runs every algorithm of `config.algorithm`, every variant, on the same data split.

  Returns the summary rows, one per (algorithm, seed[, threshold]). `summary.json` holds them
  and, per algorithm, their mean ± std over seeds (`report.aggregate`).
  """
  config_checks.validate_config(config)  # the one validation, before any data is read
  os.makedirs(workdir, exist_ok=True)
  checkpoint.check_workdir_config(workdir, _config_dict(config))
  setup = setup_lib.resolve(config)
  if config.memory_check:
    setup = memory.fit(setup)  # before anything trains: the layout that fits, or a clear stop
  dataset = setup.dataset
  logging.info('data %s: %d clients, sizes %d..%d, %d test examples, input %s', dataset.name,
               dataset.num_clients, dataset.client_sizes.min(), dataset.client_sizes.max(),
               len(dataset.test_y), dataset.input_shape)
  if sharding.is_writer():
    stats.save_client_stats(dataset, workdir)
  if config.data.label_noise:
    logging.info('threat simulation: clients %s have permuted labels',
                 data_lib.noisy_clients(config.num_clients, config.data.label_noise, config.seed))
  byzantine = setup_lib.byzantine_clients(config.num_clients, config.attack.update_fraction,
                                          config.seed)
  if byzantine:
    logging.info('threat simulation: clients %s send θ_t + (%g) · their update whenever sampled',
                 list(byzantine), config.attack.update_factor)
  if config.update_aggregation != 'mean':
    logging.info('server aggregation of the updates: %s%s%s', config.update_aggregation,
                 f' (trim {config.update_trim})' if config.update_aggregation == 'trimmed_mean'
                 else '', f' over random buckets of {config.update_bucket} clients'
                 if config.update_bucket > 1 else '')
  warmup = {s: setup_lib.warmup_client(config.num_clients, s) for s in setup.seeds
            } if config.warmup_epochs else {}
  if warmup:
    logging.info('warm start: θ0 trained %d epoch(s) on client %s (by seed)',
                 config.warmup_epochs, warmup)
  writer = logbook.MetricsWriter(workdir)
  progress = checkpoint.load_progress(workdir)
  rows = []
  try:
    for name in algorithms.parse(config.algorithm):
      algorithm = algorithms.get(name, config, setup.units)
      key = checkpoint_name(algorithm, setup)
      if key in progress:
        logging.info('[%s] already finished in this workdir', key)
        rows.extend(progress[key])
        continue
      ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', key),
                                     config.checkpoint_every, mesh=setup.mesh)
      try:
        finished = run_algorithm(setup, algorithm, writer=writer, ckpt=ckpt, earlier=rows)
      finally:
        ckpt.close()
      rows.extend(finished)
      progress[key] = finished
      checkpoint.save_progress(workdir, progress)
  finally:
    writer.close()
  if not sharding.is_writer():
    return rows
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'config': _config_dict(config), 'rows': rows, 'aggregate': report.aggregate(rows),
               'warmup_clients': warmup, 'layout': setup.layout}, f, indent=2, default=str)
  print(report.table(rows))
  for path in writer.plot():
    logging.info('wrote %s', path)
  return rows
