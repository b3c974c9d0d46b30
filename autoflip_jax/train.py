"""`train_and_evaluate(config, workdir)`: the main job, from config to metrics, table and plots.

Data walks one way: config -> validate -> data -> model -> for each algorithm: init (exploration
and mask) -> per round: sample -> gather padded client arrays -> one jitted round -> evaluate ->
`metrics.jsonl`. After all algorithms: `summary.json`, the printed table and plots.

Every row of `metrics.jsonl` is one JSON object: round 0 is the starting point (the initial
model under the algorithm's mask, and the exploration's cost for AutoFLIP), then one row per
round. Fields: round, algorithm, test_accuracy, test_loss, train_loss, kept_params, total_params,
compression, sparsity, flops_per_example (sparse), flops_structured, flops_dense, bytes_up,
bytes_down (this round, all sampled clients), cum_bytes_up, cum_bytes_down, learning_rate,
round_seconds.

Multi-process runs (`autoflip_jax/distributed.py`): every process runs this same job; process 0
alone writes the files (`checkpoint.is_writer`) except the orbax checkpoints, which every process
saves together.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, algorithms, checkpoint, federated, local, masks, models
from autoflip_jax import report
from autoflip_jax import data as data_lib
from autoflip_jax.data import stats
from autoflip_jax.config_checks import tp_sweep_values, validate_config, validate_fit
from autoflip_jax.masks import apply_mask, unit_counts


def sample_clients(seed: int, round_num: int, num_clients: int, per_round: int) -> np.ndarray:
  """The cohort of a round: sorted ids, fixed by (seed, round), the same for every algorithm."""
  rng = np.random.default_rng([seed, 1, round_num])
  return np.sort(rng.choice(num_clients, size=per_round, replace=False))


def make_eval_fn(apply_fn, batch_size: int):
  """Returns `evaluate(params, x, y) -> (accuracy, mean loss)` over fixed-size padded chunks."""
  @jax.jit
  def chunk(params, x, y, valid):
    logits = apply_fn(params, x)
    total, _ = local.cross_entropy(apply_fn=lambda p, x: logits, params=params, x=x, y=y,
                                   valid=valid)
    correct = jnp.sum((jnp.argmax(logits, -1) == y) & valid)
    return correct, total

  def evaluate(params, x, y):
    n = len(y)
    correct = loss = 0.0
    for start in range(0, n, batch_size):
      xb, yb = x[start:start + batch_size], y[start:start + batch_size]
      pad = batch_size - len(yb)
      valid = np.arange(batch_size) < len(yb)
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
      c, l = chunk(params, xb, yb, valid)
      correct, loss = correct + float(c), loss + float(l)
    return correct / n, loss / n
  return evaluate


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


class MetricsWriter:
  """`metrics.jsonl`, one JSON row per line, flushed per row so a crash keeps what was done.

  On resume, `reset(algorithm, upto)` drops that algorithm's rows after round `upto` (they belong
  to rounds the checkpoint does not hold and will be run again). In a multi-process run only
  process 0 (`checkpoint.is_writer`) reads and writes the file; the others write nothing.
  """

  def __init__(self, path: str):
    self.path = path
    self._rows = []
    # Only the writer needs the old rows; another process could read the file mid-rewrite.
    self._writes = checkpoint.is_writer()
    if self._writes and os.path.exists(path):
      with open(path) as f:
        self._rows = [json.loads(line) for line in f if line.strip()]

  def reset(self, algorithm: str, upto: int) -> None:
    if not self._writes:
      return
    self._rows = [r for r in self._rows if r['algorithm'] != algorithm or r['round'] <= upto]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in self._rows)

  def write(self, row: dict) -> None:
    if not self._writes:
      return
    self._rows.append(row)
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')

  def plot(self) -> list[str]:
    """The plots of the rows so far next to the file (`report.plot_metrics`); process 0 only."""
    if not self._writes:
      return []
    return report.plot_metrics(self.path, os.path.dirname(self.path))


def make_packer(dataset, batch_size: int, mesh=None):
  """Returns `pack(ids) -> (ClientData, num_examples)`: those clients' padded device arrays.

  Only the clients asked for are packed (a round's cohort, the explorers), so host and device
  memory grow with the cohort, not with the federation. With a `mesh` the client axis is split
  over its devices. The number of steps is fixed by the
  largest client of the whole dataset, so every round has the same shapes and compiles once.
  """
  steps = data_lib.steps_for(dataset.client_sizes, batch_size)

  def pack(ids):
    b = data_lib.pack_clients([dataset.client_x[i] for i in ids],
                              [dataset.client_y[i] for i in ids], batch_size, steps)
    return federated.shard_clients(
        (local.ClientData(b.x, b.y, b.valid), np.asarray(b.num_examples)), mesh)
  return pack


def cost_fields(params0, mask, positions) -> dict:
  """Parameter, compression and FLOP figures of a mask (see `accounting`)."""
  mask = jax.tree.map(host_value, mask)
  total = accounting.total_params(params0)
  kept = accounting.kept_params(mask)
  return dict(
      kept_params=kept, total_params=total, compression=total / max(kept, 1),
      sparsity=1.0 - kept / total,
      flops_per_example=accounting.flops_per_example(params0, mask, positions, 'sparse'),
      flops_structured=accounting.flops_per_example(params0, mask, positions, 'structured'),
      flops_dense=accounting.flops_per_example(params0, None, positions, 'dense'))


def round_learning_rate(config, round_num: int) -> float:
  """The learning rate of round `round_num` (1-based): learning_rate * lr_decay**(round - 1)."""
  return config.learning_rate * config.lr_decay ** (round_num - 1)


def eval_due(config, round_num: int) -> bool:
  """Whether the test set is evaluated after this round (else the last figures are repeated)."""
  return round_num % config.eval_every == 0 or round_num == config.num_rounds


def start_totals(init: algorithms.AlgorithmInit, acc: float, loss: float) -> dict:
  """An algorithm's running totals before round 1 (saved with each checkpoint)."""
  return dict(cum_up=init.bytes_up, cum_down=init.bytes_down, acc=acc, loss=loss,
              init_up=init.bytes_up, init_down=init.bytes_down, init_seconds=init.seconds,
              info=init.info or {}, mask_is_new=True)


def initial_row(name: str, init: algorithms.AlgorithmInit, acc: float, loss: float,
                costs: dict) -> dict:
  """The round-0 metrics row: the initial model under the first mask, the init's cost."""
  return dict(round=0, algorithm=name, test_accuracy=acc, test_loss=loss, train_loss=None,
              **costs, bytes_up=init.bytes_up, bytes_down=init.bytes_down,
              cum_bytes_up=init.bytes_up, cum_bytes_down=init.bytes_down, learning_rate=None,
              round_seconds=init.seconds)


def check_finite(name: str, round_num: int, train_loss: float, client_loss, ids,
                 checkpointed: int | None) -> None:
  """Raises FloatingPointError naming the round and clients when the training loss diverged.

  `client_loss` may be split over processes; it is then gathered (by every process alike, as
  they all see the same `train_loss`).
  """
  if np.isfinite(train_loss):
    return
  client_loss = np.asarray(host_value(client_loss))
  bad = [int(ids[i]) for i, l in enumerate(client_loss) if not np.isfinite(l)]
  raise FloatingPointError(
      f'[{name}] round {round_num}: non-finite training loss {train_loss} from client(s) {bad}. '
      f'Rounds up to {checkpointed} are checkpointed in the workdir; lower '
      f'config.learning_rate and start a new workdir.')


def round_traffic(costs: dict, total: int, clients: int, mask_is_new: bool) -> tuple[int, int]:
  """(bytes up, bytes down) of a round; the mask's bitmap goes down while it is new."""
  send_mask = mask_is_new and costs['kept_params'] < total
  return accounting.round_bytes(costs['kept_params'], total, clients, send_mask)


def round_row(name: str, round_num: int, totals: dict, train_loss: float, costs: dict, up: int,
              down: int, lr: float, seconds: float) -> dict:
  """The metrics row of a training round (`totals` already include this round's bytes)."""
  return dict(round=round_num, algorithm=name, test_accuracy=totals['acc'],
              test_loss=totals['loss'], train_loss=train_loss, **costs, bytes_up=up,
              bytes_down=down, cum_bytes_up=totals['cum_up'], cum_bytes_down=totals['cum_down'],
              learning_rate=lr, round_seconds=seconds)


def log_round(name: str, round_num: int, num_rounds: int, totals: dict, train_loss: float,
              costs: dict, up: int, down: int, rounds_per_s: float, eta: float) -> None:
  logging.info('[%s] round %d/%d  acc %.4f  train_loss %.4f  kept %d/%d (sparsity %.1f%%, '
               '%.2fx)  up %s down %s  %.2f rounds/s  ETA %.0f s', name, round_num, num_rounds,
               totals['acc'], train_loss, costs['kept_params'], costs['total_params'],
               100 * costs['sparsity'], costs['compression'], report.human_bytes(up),
               report.human_bytes(down), rounds_per_s, eta)


def summary_row(name: str, totals: dict, params0, mask, positions, units) -> dict:
  """An algorithm's final row (summary.json, the table): accuracy, costs, bytes, its info."""
  mask = jax.tree.map(host_value, mask)
  summary = dict(algorithm=name, test_accuracy=totals['acc'],
                 **cost_fields(params0, mask, positions),
                 bytes_up_total=totals['cum_up'], bytes_down_total=totals['cum_down'],
                 exploration_bytes=totals['init_up'] + totals['init_down'],
                 exploration_seconds=totals['init_seconds'],
                 units={k: f'{a}/{b}' for k, (a, b) in unit_counts(mask, units).items()})
  summary.update(totals['info'])
  return summary


def make_round(config, apply_fn, hooks: algorithms.Hooks):
  """The algorithm's jitted round for this config (`federated.make_round_fn`)."""
  return federated.make_round_fn(
      apply_fn, optimizer=config.optimizer, local_epochs=config.local_epochs,
      mask_fn=hooks.mask_fn, track_grad_sq=hooks.track_grad_sq,
      clients_per_chunk=federated.chunk_for(config))


def run_algorithm(name: str, config, *, model, params0, pack, dataset, positions, rng,
                  writer: MetricsWriter, ckpt: checkpoint.Checkpointer,
                  previous: dict | None = None, mesh=None) -> dict:
  """Runs (or resumes) one algorithm for `config.num_rounds` rounds; returns its summary row.

  `previous`: {name: summary row} of the algorithms run before it, for `algorithms.init`.
  """
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  units = model.units()
  evaluate = make_eval_fn(apply_fn, config.eval_batch_size)
  total = accounting.total_params(params0)
  hooks = algorithms.hooks(name, config, units, params0)
  start_round = ckpt.latest_round()
  if start_round is None:
    init = algorithms.init(name, params0, config=config, apply_fn=apply_fn, units=units,
                           pack=pack, rng=jax.random.fold_in(rng, 2), previous=previous)
    if init.info:
      logging.info('[%s] before round 1: %s in %.1f s', name, init.info, init.seconds)
    state = federated.ServerState(jax.tree.map(jnp.array, params0), init.mask, jnp.int32(0))
    acc, loss = evaluate(apply_mask(state.params, init.mask), dataset.test_x, dataset.test_y)
    totals = start_totals(init, acc, loss)
    writer.reset(name, -1)
    writer.write(initial_row(name, init, acc, loss, cost_fields(params0, init.mask, positions)))
    start_round = 0
    ckpt.maybe_save(0, ckpt_tree(state, init.aux, init.extra), totals, force=True)
  else:
    like = ckpt_tree(federated.ServerState(params0, masks.ones_mask(params0), jnp.int32(0)),
                      hooks.aux_like, hooks.extra_like)
    tree, totals = ckpt.restore(start_round, like)
    state = federated.ServerState(tree['params'], tree['mask'], tree['round'])
    init = algorithms.AlgorithmInit(state.mask, tree.get('aux'), tree.get('extra'),
                                    totals['init_up'], totals['init_down'],
                                    totals['init_seconds'], totals['info'])
    writer.reset(name, start_round)
    logging.info('[%s] resumed from the checkpoint of round %d', name, start_round)

  # The round counter too: a host-local counter next to mesh-placed params would compile the
  # round a second time from round 2 on.
  state = federated.replicate(state, mesh)
  round_fn = make_round(config, apply_fn, hooks)
  costs = cost_fields(params0, state.mask, positions)
  extra = init.extra
  # A client needs the mask's bitmap in the first round after the mask is new to it.
  mask_is_new = totals['mask_is_new']
  train_rng = jax.random.fold_in(rng, 1)
  start = time.time()
  for r in range(start_round + 1, config.num_rounds + 1):
    t0 = time.time()
    ids = sample_clients(config.seed, r, config.num_clients, config.clients_per_round)
    batch, num_examples = pack(ids)
    lr = round_learning_rate(config, r)
    state, met = round_fn(state, batch, num_examples, federated.shard_clients(ids, mesh),
                          train_rng, jnp.float32(lr), init.aux)
    train_loss = float(met.train_loss)
    check_finite(name, r, train_loss, met.client_loss, ids, ckpt.latest_round())
    if hooks.mask_fn is not None:  # the round built this round's mask
      costs, mask_is_new = cost_fields(params0, state.mask, positions), True
    fields = costs
    up, down = round_traffic(fields, total, len(ids), mask_is_new)
    mask_is_new = False
    if hooks.update is not None:
      new_mask, extra = hooks.update(r, state, met, extra)
      if new_mask is not None:
        new_mask = federated.replicate(new_mask, mesh)
        state = state._replace(mask=new_mask, params=apply_mask(state.params, new_mask))
        costs, mask_is_new = cost_fields(params0, new_mask, positions), True
    totals['mask_is_new'] = mask_is_new
    totals['cum_up'] += up
    totals['cum_down'] += down
    if eval_due(config, r):
      totals['acc'], totals['loss'] = evaluate(state.params, dataset.test_x, dataset.test_y)
    writer.write(round_row(name, r, totals, train_loss, fields, up, down, lr, time.time() - t0))
    ckpt.maybe_save(r, ckpt_tree(state, init.aux, extra), totals, force=r == config.num_rounds)
    if r % config.checkpoint_every == 0:  # plots a person can watch while the run goes on
      writer.plot()
    done = r - start_round
    eta = (time.time() - start) / done * (config.num_rounds - r)
    log_round(name, r, config.num_rounds, totals, train_loss, fields, up, down,
              done / (time.time() - start), eta)
  return summary_row(name, totals, params0, state.mask, positions, units)


def ckpt_tree(state: federated.ServerState, aux, extra) -> dict:
  """The checkpointed tree of a run (`run_algorithm`, `tp_sweep.run_sweep`): state, aux, extra."""
  tree = {'params': state.params, 'mask': state.mask, 'round': state.round}
  if aux is not None:
    tree['aux'] = aux
  if extra is not None:
    tree['extra'] = extra
  return tree


def _config_dict(config) -> dict:
  return json.loads(json.dumps(config.to_dict(), default=str))


def train_and_evaluate(config, workdir: str) -> list[dict]:
  """Runs every algorithm of `config.algorithm` on the same data, seed and initial model.

  With `config.tp_sweep`, `autoflip` runs once per threshold, side by side (`tp_sweep.py`): its
  rows are named `autoflip_tp<Tp>`.
  """
  validate_config(config)
  names = algorithms.parse(config.algorithm)
  os.makedirs(workdir, exist_ok=True)
  checkpoint.check_workdir_config(workdir, _config_dict(config))
  dataset = data_lib.load(config.data, config.num_clients, config.seed)
  validate_fit(config, dataset)
  logging.info('data %s: %d clients, sizes %d..%d, %d test examples, input %s', dataset.name,
               dataset.num_clients, dataset.client_sizes.min(), dataset.client_sizes.max(),
               len(dataset.test_y), dataset.input_shape)
  if checkpoint.is_writer():
    stats.save_client_stats(dataset, workdir)
  model = models.get_model(config, dataset.num_classes)
  rng = jax.random.key(config.seed)
  params0 = jax.jit(model.init)(
      jax.random.fold_in(rng, 0), jnp.zeros((1,) + dataset.input_shape, dataset.test_x.dtype))
  params0 = params0['params']
  mesh = federated.client_mesh(config.mesh_devices)
  pack = make_packer(dataset, config.batch_size, mesh)
  positions = accounting.kernel_positions(model.apply, params0, dataset.input_shape,
                                          dataset.test_x.dtype)
  writer = MetricsWriter(os.path.join(workdir, 'metrics.jsonl'))
  progress = checkpoint.load_progress(workdir)
  tps = tp_sweep_values(config)
  rows = []
  for name in names:
    common = dict(model=model, params0=params0, pack=pack, dataset=dataset, positions=positions,
                  rng=rng, writer=writer, mesh=mesh)
    if name == 'autoflip' and tps:  # every threshold side by side, as one run (tp_sweep.py)
      from autoflip_jax import tp_sweep  # here, not at the top: tp_sweep imports this module
      run_names, ckpt_name = [tp_sweep.sweep_name(tp) for tp in tps], tp_sweep.CHECKPOINT_NAME
      run = lambda ckpt: tp_sweep.run_sweep(config, tps, ckpt=ckpt, **common)
    else:
      run_names, ckpt_name = [name], name
      run = lambda ckpt: [run_algorithm(name, config, ckpt=ckpt,
                                        previous={r['algorithm']: r for r in rows}, **common)]
    if all(n in progress for n in run_names):
      logging.info('[%s] already finished in this workdir', ckpt_name)
      rows.extend(progress[n] for n in run_names)
      continue
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', ckpt_name),
                                   config.checkpoint_every, mesh=mesh)
    try:
      finished = run(ckpt)
    finally:
      ckpt.close()
    rows.extend(finished)
    progress.update((r['algorithm'], r) for r in finished)
    checkpoint.save_progress(workdir, progress)
  if not checkpoint.is_writer():
    return rows
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'config': _config_dict(config), 'rows': rows}, f, indent=2, default=str)
  print(report.table(rows))
  for path in writer.plot():
    logging.info('wrote %s', path)
  return rows
