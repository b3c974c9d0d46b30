"""Checkpoints and resuming: a rerun of the same command with the same workdir continues the run.

Layout of a workdir:
  config.json             the run's config; once the run has started training (a metrics row
                          or a checkpoint step exists) a rerun with a different config is
                          refused; before that, a new command replaces it (`run_started`)
  metrics.jsonl           one row per round; on resume, rows after the checkpoint are dropped
  progress.json           {run: summary rows} of the algorithms already finished
  tensorboard/<algorithm>/seed<seed>/  TensorBoard event files of the same rows
  checkpoints/<run>/<round>/  orbax: one algorithm's `train.RunState` whole, every variant
                          (seeds, thresholds) on a leading axis: the server state (params, mask,
                          round), the algorithm's own arrays (AutoFLIP's per-client explorations
                          with per-round guidance, PruneFL's importance), and as JSON each
                          variant's name, seed, threshold and running totals (`logbook.Ledger`)

Everything else a round needs is a function of (seed, round): the cohort, the learning rate and
every PRNG key (`fold_in`). So a run resumed from round r ends with exactly the params and metrics
of an uninterrupted run.

Multi-process runs (`autoflip_jax/distributed.py`): every process runs the same code on the same
workdir. Orbax checkpoints are saved and restored by ALL processes together (orbax coordinates
them); they hold global arrays, replicated on the run's mesh (`Checkpointer(mesh=...)`). The
other files are written by process 0 alone (`is_writer`) and read by every process.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from autoflip_jax import sharding
from autoflip_jax.sharding import is_writer

PyTree = Any


class CheckpointError(RuntimeError):
  """A workdir's checkpoint cannot be used; the message says what to do. Nothing is overwritten."""


def _write_atomic(path: str, text: str) -> None:
  """Writes `path` whole or not at all, so another process never reads half of it."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def _is_step(name: str) -> bool:
  """Whether an entry of a run's checkpoint folder is an orbax step: `<round>`, or
  `<round>.orbax-checkpoint-tmp...` while it is being saved."""
  return name.split('.', 1)[0].isdigit()


def run_started(workdir: str) -> bool:
  """Whether a run has started training in `workdir`: a metrics row, a checkpoint step (of any
  algorithm) or a finished algorithm in `progress.json` exists.

  A failed start (bad data, bad flags) leaves none of them, only `config.json` and perhaps an
  empty `metrics.jsonl` or the empty `checkpoints/<run>/` folder orbax creates on open.
  """
  for name in ('metrics.jsonl', 'progress.json'):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      with open(path) as f:
        text = f.read().strip()
      if text and text != '{}':
        return True
  root = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(root):
    for run in os.scandir(root):
      if run.is_dir() and any(_is_step(e.name) for e in os.scandir(run.path)):
        return True
  return False


# Fields that lay the same computation out differently (chunks of clients, padding, the memory
# check): a run may resume with other values of them.
LAYOUT_FIELDS = ('clients_per_chunk', 'memory_check', 'pad_steps')


def check_workdir_config(workdir: str, config_dict: dict) -> None:
  """Writes `config.json`, or checks that a started run's one holds the same config.

  Only a run that has started training (`run_started`) owns its workdir: a `config.json` left by
  a start that failed before that is replaced by the new config, so the fixed command (or any
  other) runs. `LAYOUT_FIELDS` may differ. Every process checks; only process 0 writes
  (`is_writer`).

  Raises:
    CheckpointError: the workdir holds a started run with a different config.
  """
  path = os.path.join(workdir, 'config.json')
  text = json.dumps(config_dict, sort_keys=True, default=str)
  saved = None
  if os.path.exists(path):
    with open(path) as f:
      saved = f.read()
  if saved == text:
    return
  if saved is not None:
    old, new = json.loads(saved), json.loads(text)
    diff = sorted(k for k in set(old) | set(new)
                  if old.get(k) != new.get(k) and k not in LAYOUT_FIELDS)
    started = run_started(workdir)
    if started and diff:
      raise CheckpointError(
          f'{workdir} holds a run with a different config (fields: {", ".join(diff)}). Rerun '
          f'with the same config to resume it, or choose a new --workdir.')
    if not started:
      logging.info('%s: replacing the config.json of a run that never started', workdir)
  if is_writer():
    _write_atomic(path, text)


def load_progress(workdir: str) -> dict:
  path = os.path.join(workdir, 'progress.json')
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def save_progress(workdir: str, progress: dict) -> None:
  """Writes `progress.json` (process 0 only, `is_writer`)."""
  if is_writer():
    _write_atomic(os.path.join(workdir, 'progress.json'),
                  json.dumps(progress, indent=2, default=str))


class Checkpointer:
  """Orbax `CheckpointManager` for one algorithm's run state: arrays and JSON metadata.

  With a `mesh` (`sharding.client_mesh`) every array is saved as a global array replicated on
  it, and restored onto that sharding: a multi-process run cannot save one process's host-local
  arrays. Every process must then call `maybe_save` and `restore` alike.
  """

  def __init__(self, directory: str, every: int, keep: int = 2,
               mesh: jax.sharding.Mesh | None = None):
    self._every = every
    self._mesh = mesh
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                                          create=True))

  def latest_round(self) -> int | None:
    return self._manager.latest_step()

  def maybe_save(self, round_num: int, tree: PyTree, meta: dict, force: bool = False) -> None:
    if force or round_num % self._every == 0:
      tree = sharding.replicate(tree, self._mesh)
      self._manager.save(round_num, args=ocp.args.Composite(
          tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()

  def restore(self, round_num: int, like: PyTree) -> tuple[PyTree, dict]:
    """Restores the tree shaped like `like` (arrays or ShapeDtypeStructs) and its totals.

    With a mesh the arrays come back replicated on it, whatever `like`'s shardings.
    """
    if self._mesh is None:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    else:
      spec = jax.sharding.NamedSharding(self._mesh, jax.sharding.PartitionSpec())
      abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=spec),
                              like)
    try:
      out = self._manager.restore(round_num, args=ocp.args.Composite(
          tree=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 -- any failure here means the same thing to a user
      raise CheckpointError(
          f'the checkpoint of round {round_num} in {self._manager.directory} cannot be restored '
          f'({type(e).__name__}: {e}). It was left as it is: move it away to start over, or use '
          f'a new --workdir.') from e
    return out['tree'], out['meta']

  def close(self) -> None:
    self._manager.close()
