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
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, algorithms, federated, local, models, report
from autoflip_jax import data as data_lib
from autoflip_jax.config_checks import validate_config, validate_fit
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


class _Writer:
  """Appends one JSON line per row to `metrics.jsonl`, flushed so a crash keeps what was done."""

  def __init__(self, path: str):
    self._file = open(path, 'w')

  def write(self, row: dict) -> None:
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def run_algorithm(name: str, config, *, model, params0, clients: local.ClientData,
                  num_examples: np.ndarray, dataset, positions, rng, writer) -> dict:
  """Runs one algorithm for `config.num_rounds` rounds; returns its summary row."""
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  init = algorithms.init(name, params0, config=config, apply_fn=apply_fn, units=model.units(),
                         clients=clients, num_examples=num_examples,
                         rng=jax.random.fold_in(rng, 2))
  if init.info:
    logging.info('[%s] exploration: %s in %.1f s', name, init.info, init.seconds)
  round_fn = federated.make_round_fn(apply_fn, optimizer=config.optimizer,
                                     local_epochs=config.local_epochs, mask_fn=init.mask_fn)
  evaluate = make_eval_fn(apply_fn, config.eval_batch_size)
  state = federated.ServerState(jax.tree.map(jnp.array, params0), init.mask, jnp.int32(0))
  total = accounting.total_params(params0)
  dense_flops = accounting.flops_per_example(params0, None, positions, 'dense')
  cum_up, cum_down = init.bytes_up, init.bytes_down
  train_rng = jax.random.fold_in(rng, 1)
  costs = {}

  def cost_fields(mask):
    # The mask is fixed for most algorithms: count it once per distinct mask object.
    if id(mask) not in costs:
      costs.clear()
      kept = accounting.kept_params(mask)
      costs[id(mask)] = dict(
          kept_params=kept, total_params=total, compression=total / max(kept, 1),
          sparsity=1.0 - kept / total,
          flops_per_example=accounting.flops_per_example(params0, mask, positions, 'sparse'),
          flops_structured=accounting.flops_per_example(params0, mask, positions, 'structured'),
          flops_dense=dense_flops)
    return costs[id(mask)]

  acc, loss = evaluate(apply_mask(state.params, init.mask), dataset.test_x, dataset.test_y)
  row = dict(round=0, algorithm=name, test_accuracy=acc, test_loss=loss, train_loss=None,
             **cost_fields(state.mask), bytes_up=cum_up, bytes_down=cum_down, cum_bytes_up=cum_up,
             cum_bytes_down=cum_down, learning_rate=None, round_seconds=init.seconds)
  writer.write(row)
  dense = name == 'fedavg'
  start = time.time()
  for r in range(1, config.num_rounds + 1):
    t0 = time.time()
    ids = sample_clients(config.seed, r, config.num_clients, config.clients_per_round)
    batch = jax.tree.map(lambda a: jnp.asarray(a[ids]), clients)
    lr = config.learning_rate * config.lr_decay ** (r - 1)
    state, met = round_fn(state, batch, jnp.asarray(num_examples[ids]), jnp.asarray(ids),
                          train_rng, jnp.float32(lr), init.aux)
    train_loss = float(met.train_loss)
    if not np.isfinite(train_loss):
      bad = [int(ids[i]) for i, l in enumerate(np.asarray(met.client_loss)) if not np.isfinite(l)]
      raise FloatingPointError(f'[{name}] round {r}: non-finite training loss {train_loss} '
                               f'from client(s) {bad}; lower config.learning_rate')
    if init.mask_fn is not None:
      costs.clear()  # the mask is new every round
    fields = cost_fields(state.mask)
    send_mask = not dense and (r == 1 or init.mask_fn is not None)
    up, down = accounting.round_bytes(fields['kept_params'], total, len(ids), send_mask)
    cum_up, cum_down = cum_up + up, cum_down + down
    if r % config.eval_every == 0 or r == config.num_rounds:
      acc, loss = evaluate(state.params, dataset.test_x, dataset.test_y)
    seconds = time.time() - t0
    row = dict(round=r, algorithm=name, test_accuracy=acc, test_loss=loss, train_loss=train_loss,
               **fields, bytes_up=up, bytes_down=down, cum_bytes_up=cum_up,
               cum_bytes_down=cum_down, learning_rate=lr, round_seconds=seconds)
    writer.write(row)
    elapsed = time.time() - start
    eta = elapsed / r * (config.num_rounds - r)
    logging.info('[%s] round %d/%d  acc %.4f  train_loss %.4f  kept %d/%d (%.2fx)  '
                 'up %s down %s  %.2f s/round  ETA %.0f s', name, r, config.num_rounds, acc,
                 train_loss, fields['kept_params'], total, fields['compression'],
                 report.human_bytes(up), report.human_bytes(down), elapsed / r, eta)
  summary = dict(algorithm=name, test_accuracy=acc, **cost_fields(state.mask),
                 bytes_up_total=cum_up, bytes_down_total=cum_down,
                 exploration_bytes=init.bytes_up + init.bytes_down,
                 exploration_seconds=init.seconds, train_seconds=time.time() - start,
                 units={k: f'{a}/{b}' for k, (a, b) in
                        unit_counts(state.mask, model.units()).items()})
  if init.info:
    summary.update(init.info)
  return summary


def train_and_evaluate(config, workdir: str) -> list[dict]:
  """Runs every algorithm of `config.algorithm` on the same data, seed and initial model."""
  validate_config(config)
  names = algorithms.parse(config.algorithm)
  os.makedirs(workdir, exist_ok=True)
  dataset = data_lib.load(config.data, config.num_clients, config.seed)
  validate_fit(config, dataset)
  logging.info('data %s: %d clients, sizes %d..%d, %d test examples, input %s', dataset.name,
               dataset.num_clients, dataset.client_sizes.min(), dataset.client_sizes.max(),
               len(dataset.test_y), dataset.input_shape)
  model = models.get_model(config, dataset.num_classes)
  rng = jax.random.key(config.seed)
  params0 = model.init(jax.random.fold_in(rng, 0),
                       jnp.zeros((1,) + dataset.input_shape, dataset.test_x.dtype))['params']
  steps = data_lib.steps_for(dataset.client_sizes, config.batch_size)
  packed = data_lib.pack_clients(dataset.client_x, dataset.client_y, config.batch_size, steps)
  clients = local.ClientData(packed.x, packed.y, packed.valid)
  positions = accounting.kernel_positions(model.apply, params0, dataset.input_shape,
                                          dataset.test_x.dtype)
  writer = _Writer(os.path.join(workdir, 'metrics.jsonl'))
  rows = []
  try:
    for name in names:
      rows.append(run_algorithm(name, config, model=model, params0=params0, clients=clients,
                                num_examples=packed.num_examples, dataset=dataset,
                                positions=positions, rng=rng, writer=writer))
  finally:
    writer.close()
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'config': config.to_dict() if hasattr(config, 'to_dict') else dict(config),
               'rows': rows}, f, indent=2, default=str)
  print(report.table(rows))
  for path in report.plot_metrics(os.path.join(workdir, 'metrics.jsonl'), workdir):
    logging.info('wrote %s', path)
  return rows
