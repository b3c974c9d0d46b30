"""The host's bookkeeping of a run: its running totals, metrics rows, progress line, files.

Every row of `metrics.jsonl` is one JSON object: round 0 is the starting point (the initial
model under the algorithm's first mask, and the cost of its work before round 1, e.g. AutoFLIP's
exploration), then one row per round. Fields: round, algorithm, seed, test_accuracy, test_loss,
train_loss, kept_params, total_params, compression, sparsity, flops_per_example (sparse),
flops_structured, flops_dense, bytes_up, bytes_down (this round, all sampled clients),
cum_bytes_up, cum_bytes_down, learning_rate, round_seconds, epsilon (DP-FedAvg's ε after this
round at `dp.delta`; None when training is not private).

The same rows go to TensorBoard event files (`tensorboardX`, no TensorFlow) under
`<workdir>/tensorboard/<algorithm>/seed<seed>`, so `tensorboard --logdir runs/` shows every run.
Only process 0 writes (`sharding.is_writer`); the others keep the books silently.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np
from tensorboardX import SummaryWriter

from autoflip_jax import accounting, report, sharding, shrink
from autoflip_jax.masks import unit_counts

PyTree = Any
TENSORBOARD_FIELDS = ('test_accuracy', 'test_loss', 'train_loss', 'sparsity', 'compression',
                      'cum_bytes_up', 'cum_bytes_down', 'learning_rate', 'round_seconds',
                      'epsilon')


@dataclasses.dataclass(frozen=True)
class Ledger:
  """One variant's running totals between rounds (saved with every checkpoint, as JSON).

  Advanced by pure functions (`start_ledger`, `after_round`): a new Ledger each round.
  """
  cum_up: int           # bytes sent up so far, the work before round 1 included
  cum_down: int
  acc: float            # the last evaluated test accuracy and loss
  loss: float
  mask_is_new: bool     # the next round's clients need the mask's bitmap
  init_up: int          # the work before round 1: bytes, seconds, statistics
  init_down: int
  init_seconds: float
  info: dict
  diverged_round: int = 0  # the first round with a non-finite training loss (0: none)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> 'Ledger':
    return cls(**d)


def start_ledger(start, acc: float, loss: float) -> Ledger:
  """The totals before round 1, from an algorithm's `Start` and the round-0 evaluation."""
  return Ledger(cum_up=start.bytes_up, cum_down=start.bytes_down, acc=acc, loss=loss,
                mask_is_new=True, init_up=start.bytes_up, init_down=start.bytes_down,
                init_seconds=start.seconds, info=dict(start.info or {}))


def after_round(ledger: Ledger, up: int, down: int, mask_is_new: bool,
                evaluation: tuple[float, float] | None) -> Ledger:
  """The totals after a round: its bytes added, the new evaluation if there was one."""
  acc, loss = evaluation if evaluation is not None else (ledger.acc, ledger.loss)
  return dataclasses.replace(ledger, cum_up=ledger.cum_up + up, cum_down=ledger.cum_down + down,
                             acc=acc, loss=loss, mask_is_new=mask_is_new)


def cost_fields(params0: PyTree, mask: PyTree, positions: dict, units=()) -> dict:
  """Parameter, compression and FLOP figures of a mask (see `accounting`); `shrunk_params`:
  the parameters of the model with the mask's dead units removed (`shrink.shrunk_params`)."""
  mask = jax.tree.map(sharding.host_value, mask)
  total = accounting.total_params(params0)
  kept = accounting.kept_params(mask)
  shrunk, num_units = shrink.shrunk_params(mask, units)
  return dict(
      kept_params=kept, total_params=total, shrunk_params=shrunk, units_total=num_units,
      compression=total / max(kept, 1),
      sparsity=1.0 - kept / total,
      flops_per_example=accounting.flops_per_example(params0, mask, positions, 'sparse'),
      flops_structured=accounting.flops_per_example(params0, mask, positions, 'structured'),
      flops_dense=accounting.flops_per_example(params0, None, positions, 'dense'))


def round_traffic(costs: dict, clients: int, mask_is_new: bool) -> tuple[int, int]:
  """(bytes up, bytes down) of a round; the mask's bitmap goes down while it is new."""
  total = costs['total_params']
  send_mask = mask_is_new and costs['kept_params'] < total
  return accounting.round_bytes(costs['kept_params'], total, clients, send_mask,
                                costs.get('shrunk_params'), costs.get('units_total', 0))


def initial_row(name: str, seed: int, ledger: Ledger, costs: dict) -> dict:
  """The round-0 metrics row: the initial model under the first mask, the init's cost."""
  return dict(round=0, algorithm=name, seed=seed, test_accuracy=ledger.acc,
              test_loss=ledger.loss, train_loss=None, **costs, bytes_up=ledger.init_up,
              bytes_down=ledger.init_down, cum_bytes_up=ledger.init_up,
              cum_bytes_down=ledger.init_down, learning_rate=None,
              round_seconds=ledger.init_seconds)


def round_row(name: str, seed: int, round_num: int, ledger: Ledger, train_loss: float,
              costs: dict, up: int, down: int, lr: float, seconds: float,
              epsilon: float | None = None) -> dict:
  """The metrics row of a training round (`ledger` already holds this round's bytes)."""
  return dict(round=round_num, algorithm=name, seed=seed, test_accuracy=ledger.acc,
              test_loss=ledger.loss, train_loss=train_loss, **costs, bytes_up=up,
              bytes_down=down, cum_bytes_up=ledger.cum_up, cum_bytes_down=ledger.cum_down,
              learning_rate=lr, round_seconds=seconds, epsilon=epsilon)


def summary_row(name: str, seed: int, ledger: Ledger, params0: PyTree, mask: PyTree,
                positions: dict, units) -> dict:
  """A variant's final row (summary.json, the table): accuracy, costs, bytes, its info."""
  mask = jax.tree.map(sharding.host_value, mask)
  summary = dict(algorithm=name, seed=seed, test_accuracy=ledger.acc,
                 **cost_fields(params0, mask, positions, units),
                 bytes_up_total=ledger.cum_up, bytes_down_total=ledger.cum_down,
                 exploration_bytes=ledger.init_up + ledger.init_down,
                 exploration_seconds=ledger.init_seconds,
                 units={k: f'{a}/{b}' for k, (a, b) in unit_counts(mask, units).items()})
  summary.update(ledger.info)
  if ledger.diverged_round:
    summary['diverged_round'] = ledger.diverged_round
  return summary


def check_finite(name: str, round_num: int, train_loss: float, client_loss, ids,
                 checkpointed: int | None, record: bool = False) -> bool:
  """Whether the training loss diverged; unless `record`, raises FloatingPointError naming the
  round and clients then (`record`: logs the same as a warning and returns True).

  `client_loss` may be split over processes; it is then gathered (by every process alike, as
  they all see the same `train_loss`).
  """
  if np.isfinite(train_loss):
    return False
  client_loss = np.asarray(sharding.host_value(client_loss))
  bad = [int(ids[i]) for i, l in enumerate(client_loss) if not np.isfinite(l)]
  what = f'[{name}] round {round_num}: non-finite training loss {train_loss} from client(s) {bad}'
  if record:
    logging.warning('%s: recorded as diverged (config.on_divergence=record); its model is '
                    'non-finite from here on and is scored as it is', what)
    return True
  raise FloatingPointError(
      f'{what}. Rounds up to {checkpointed} are checkpointed in the workdir; lower '
      f'config.learning_rate and start a new workdir, or set config.on_divergence=record to '
      f'record the divergence and go on with the other runs.')


def log_round(label: str, round_num: int, num_rounds: int, ledger: Ledger, train_loss: float,
              costs: dict, up: int, down: int, rounds_per_s: float, eta: float) -> None:
  """The progress line of a round."""
  logging.info('[%s] round %d/%d  acc %.4f  train_loss %.4f  kept %d/%d (sparsity %.1f%%, '
               '%.2fx)  up %s down %s  %.2f rounds/s  ETA %.0f s', label, round_num, num_rounds,
               ledger.acc, train_loss, costs['kept_params'], costs['total_params'],
               100 * costs['sparsity'], costs['compression'], report.human_bytes(up),
               report.human_bytes(down), rounds_per_s, eta)


class MetricsWriter:
  """`metrics.jsonl` (one JSON row per line, flushed per row so a crash keeps what was done)
  and the TensorBoard event files of every (algorithm, seed).

  On resume, `reset(algorithm, seed, upto)` drops that run's rows after round `upto` (they
  belong to rounds the checkpoint does not hold and will be run again). In a multi-process run
  only process 0 (`sharding.is_writer`) reads and writes; the others write nothing.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb_dir = os.path.join(workdir, 'tensorboard')
    self._tb = {}
    self._rows = []
    # Only the writer needs the old rows; another process could read the file mid-rewrite.
    self._writes = sharding.is_writer()
    if self._writes and os.path.exists(self.path):
      with open(self.path) as f:
        self._rows = [json.loads(line) for line in f if line.strip()]

  def reset(self, algorithm: str, seed: int, upto: int) -> None:
    if not self._writes:
      return
    self._rows = [r for r in self._rows if r['algorithm'] != algorithm
                  or r.get('seed') != seed or r['round'] <= upto]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in self._rows)

  def write(self, row: dict) -> None:
    if not self._writes:
      return
    self._rows.append(row)
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    self._tensorboard(row)

  def _tensorboard(self, row: dict) -> None:
    key = (row['algorithm'], row['seed'])
    if key not in self._tb:
      self._tb[key] = SummaryWriter(os.path.join(self._tb_dir, key[0], f'seed{key[1]}'))
    writer = self._tb[key]
    for field in TENSORBOARD_FIELDS:
      if row.get(field) is not None:
        writer.add_scalar(field, row[field], row['round'])
    writer.flush()

  def plot(self) -> list[str]:
    """The plots of the rows so far next to the file (`report.plot_metrics`); process 0 only."""
    if not self._writes:
      return []
    return report.plot_metrics(self.path, os.path.dirname(self.path))

  def close(self) -> None:
    for writer in self._tb.values():
      writer.close()
    self._tb = {}
