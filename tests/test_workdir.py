"""A workdir belongs to a run only once it has started training (`checkpoint.check_workdir_config`).

A failed start (say, a dataset that is not prepared) leaves `config.json` behind; the next command
must not be refused for it. A run with a metrics row or a checkpoint step keeps its workdir.
"""

import json
import os

import pytest

from autoflip_jax import checkpoint

OLD = {'tp': 0.3, 'data': {'name': 'cifar10'}}
NEW = {'tp': 0.3, 'data': {'name': 'mnist_5k'}}


def _saved(workdir):
  with open(os.path.join(workdir, 'config.json')) as f:
    return json.load(f)


def test_first_call_writes_the_config(tmp_path):
  checkpoint.check_workdir_config(str(tmp_path), OLD)
  assert _saved(tmp_path) == OLD


def test_config_of_a_run_that_never_started_is_replaced(tmp_path):
  workdir = str(tmp_path)
  checkpoint.check_workdir_config(workdir, OLD)
  # What a failed start may leave: an empty metrics file, an empty checkpoint folder (orbax
  # creates it before the first save), the client statistics.
  (tmp_path / 'metrics.jsonl').write_text('')
  (tmp_path / 'checkpoints' / 'autoflip').mkdir(parents=True)
  (tmp_path / 'client_stats.json').write_text('{}')
  assert not checkpoint.run_started(workdir)
  checkpoint.check_workdir_config(workdir, NEW)
  assert _saved(tmp_path) == NEW


def test_started_run_with_metrics_refuses_a_different_config(tmp_path):
  workdir = str(tmp_path)
  checkpoint.check_workdir_config(workdir, OLD)
  (tmp_path / 'metrics.jsonl').write_text(json.dumps({'round': 0}) + '\n')
  assert checkpoint.run_started(workdir)
  with pytest.raises(checkpoint.CheckpointError,
                     match='holds a run with a different config .*data'):
    checkpoint.check_workdir_config(workdir, NEW)
  assert _saved(tmp_path) == OLD
  checkpoint.check_workdir_config(workdir, OLD)  # the same config resumes


def test_started_run_with_a_checkpoint_refuses_a_different_config(tmp_path):
  workdir = str(tmp_path)
  checkpoint.check_workdir_config(workdir, OLD)
  (tmp_path / 'checkpoints' / 'autoflip' / '0').mkdir(parents=True)
  assert checkpoint.run_started(workdir)
  with pytest.raises(checkpoint.CheckpointError, match='holds a run with a different config'):
    checkpoint.check_workdir_config(workdir, NEW)
  assert _saved(tmp_path) == OLD
