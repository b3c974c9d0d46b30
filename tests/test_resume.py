"""No run loses finished work: a killed run resumes to exactly the uninterrupted result."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from autoflip_jax import checkpoint, train
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = dict(num_rounds=4, checkpoint_every=1)
FLAGS = ['--config.num_clients=4', '--config.clients_per_round=2', '--config.num_rounds=4',
         '--config.batch_size=100', '--config.e_exp=1', '--config.local_epochs=1',
         '--config.checkpoint_every=1', '--config.model_config.channels=(4, 8)',
         '--config.model_config.hidden=16']


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(l).items() if k != 'round_seconds'} for l in f]


def _start(workdir):
  """The main job in its own process (the runs compared must share XLA's settings)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.main', '--config=experiments/configs/default.py',
       f'--workdir={workdir}', *FLAGS], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)


def _run(workdir):
  proc = _start(workdir)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('full'))
  _run(workdir)
  return workdir


def test_killed_run_resumes_to_the_same_result(uninterrupted, tmp_path):
  workdir = str(tmp_path)
  proc = _start(workdir)
  for line in proc.stderr:  # kill -9 in the middle of AutoFLIP's training
    if '[autoflip] round 2/4' in line:
      proc.kill()
      break
  proc.wait(timeout=120)
  assert proc.returncode != 0
  assert 'autoflip' not in checkpoint.load_progress(workdir)
  killed_rows = _rows(workdir)
  assert 2 <= len(killed_rows) < len(_rows(uninterrupted))

  _run(workdir)
  assert _rows(workdir) == _rows(uninterrupted)
  restored = {}
  for wd in (uninterrupted, workdir):
    for name in ('autoflip', 'fedavg'):
      ckpt = checkpoint.Checkpointer(os.path.join(wd, 'checkpoints', name), every=1)
      step = ckpt.latest_round()
      assert step == 4
      like = jax.tree.map(np.asarray, _like())
      tree, _ = ckpt.restore(step, like)
      ckpt.close()
      restored.setdefault(name, []).append(tree)
  for name, (a, b) in restored.items():
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _like():
  """The checkpoint tree's structure for the tiny config."""
  import jax.numpy as jnp
  from autoflip_jax import masks, models
  config = tiny_config(**OVERRIDES)
  model = models.get_model(config, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  tree = {'params': params, 'mask': masks.ones_mask(params), 'round': jnp.int32(0)}
  return jax.tree.map(lambda a: a[None], tree)  # the variant axis: one variant


def test_finished_run_is_not_run_again(uninterrupted, monkeypatch):
  calls = []
  monkeypatch.setattr(train, 'run_algorithm', lambda *a, **k: calls.append(a))
  rows = train.train_and_evaluate(tiny_config(**OVERRIDES), uninterrupted)
  assert calls == []
  assert [r['algorithm'] for r in rows] == ['autoflip', 'fedavg']


def test_different_config_in_same_workdir_is_refused(uninterrupted):
  with pytest.raises(checkpoint.CheckpointError, match='different config .*tp'):
    train.train_and_evaluate(tiny_config(tp=0.5, **OVERRIDES), uninterrupted)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # orbax's aborted reads
def test_corrupt_checkpoint_gives_a_clear_error_and_is_kept(uninterrupted, tmp_path):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(uninterrupted, workdir)
  os.remove(os.path.join(workdir, 'progress.json'))  # pretend the run had not finished
  step_dir = os.path.join(workdir, 'checkpoints', 'autoflip', '4')
  for root, _, files in os.walk(os.path.join(step_dir, 'tree')):
    for f in files:
      if f != '_METADATA' and not f.startswith('_'):
        with open(os.path.join(root, f), 'wb') as fh:
          fh.write(b'garbage')
  with pytest.raises(checkpoint.CheckpointError, match='round 4 .* cannot be restored'):
    train.train_and_evaluate(tiny_config(**OVERRIDES), workdir)
  assert os.path.isdir(step_dir)
