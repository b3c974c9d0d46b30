"""Multi-host: two local CPU processes joined by `jax.distributed.initialize`, the cohort split
over both, run the same two rounds as one process on one device; a whole training run
(`experiments.main`) in two processes writes its files once, equal to one process's, and
resumes."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from autoflip_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'tests', 'distributed_round_check.py')
TIMEOUT = 120
RUN_TIMEOUT = 180  # a whole tiny training run
# tests/helpers.py's tiny_config on the command line, a checkpoint every round.
TINY_RUN = ['--config.num_clients=4', '--config.clients_per_round=2', '--config.num_rounds=2',
            '--config.batch_size=100', '--config.e_exp=1', '--config.local_epochs=1',
            '--config.model_config.channels=(4, 8)', '--config.model_config.hidden=16',
            '--config.algorithm=autoflip,fedavg', '--config.checkpoint_every=1']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _popen(*args):
  # One CPU device per process; XLA's optimisation passes off for the tiny program's compile
  # time, in every process alike.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start(out, *args):
  return _popen(SCRIPT, out, *args)


def _wait_all(procs, timeout=TIMEOUT, needs_ok=True):
  """Waits for every process (`timeout` s each); kills the rest when one fails or hangs.

  Returns {name: (stdout, stderr)}. With `needs_ok` a process must also print a line `OK ...`.
  """
  logs, out = [], {}
  try:
    for name, p in procs:
      try:
        stdout, stderr = p.communicate(timeout=timeout)
      except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
        raise AssertionError(f'{name} timed out after {timeout} s:\n{stderr[-3000:]}')
      logs.append(f'--- {name} (rc {p.returncode}) ---\n{stdout[-2000:]}\n{stderr[-3000:]}')
      ok = not needs_ok or any(line.startswith('OK ') for line in stdout.splitlines())
      assert p.returncode == 0 and ok, '\n'.join(logs)
      out[name] = stdout, stderr
  finally:
    for _, p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return out


def test_two_processes_round_equals_single_process(tmp_path):
  port = _free_port()
  procs = [(f'process {i}', _start(tmp_path / f'p{i}.npz', f'localhost:{port}', 2, i))
           for i in range(2)]
  procs.append(('single process', _start(tmp_path / 'single.npz')))
  _wait_all(procs)

  single, p0, p1 = (dict(np.load(tmp_path / f'{n}.npz')) for n in ('single', 'p0', 'p1'))
  assert int(p0['process_count']) == int(p1['process_count']) == 2
  assert int(single['process_count']) == 1 and int(p0['round']) == 2
  assert single.keys() == p0.keys() == p1.keys()
  for k in single:
    if k == 'process_count':
      continue
    # Both processes hold the same (replicated or gathered) result ...
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
    # ... and it is the one-device result.
    # float rounding: a CPU's native convolution sums in an order that depends on the threads
    np.testing.assert_allclose(p0[k], single[k], rtol=1e-5, atol=1e-5, err_msg=k)
  pruned = [single[f'param_{i}'][~single[f'mask_{i}']]
            for i in range(sum(k.startswith('mask_') for k in single))]
  assert pruned and all(np.all(p == 0) for p in pruned)


@pytest.mark.parametrize('args, match', [
    (('localhost:1234', 2, 2), 'process_id must be in'),
    (('localhost:1234', 2, -1), 'process_id must be in'),
    (('localhost:1234', 0, 0), 'num_processes must be at least 1'),
    (('', 2, 0), 'needs a coordinator_address'),
    (('localhost', 2, 0), 'host:port'),
])
def test_bad_settings_are_refused(args, match):
  with pytest.raises(ValueError, match=match):
    distributed.validate(*args)


def test_main_refuses_bad_process_flags(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--coordinator_address=localhost:1234', '--num_processes=2',
       '--process_id=2'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode != 0
  assert '--process_id must be in [0, num_processes=2), got 2' in proc.stderr, proc.stderr[-3000:]
  assert not os.listdir(tmp_path)


def _start_main(workdir, *flags):
  return _popen('-m', 'experiments.main', '--config=experiments/configs/default.py',
                f'--workdir={workdir}', *TINY_RUN, *flags)


def _two_process_run(workdir, *others):
  """`experiments.main` in two processes on a 2-device mesh (and `others`, started alongside)."""
  port = _free_port()
  procs = [(f'process {i}', _start_main(workdir, f'--coordinator_address=localhost:{port}',
                                        '--num_processes=2', f'--process_id={i}',
                                        '--config.mesh_devices=2'))
           for i in range(2)]
  return _wait_all(procs + list(others), timeout=RUN_TIMEOUT, needs_ok=False)


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _assert_rows_equal(multi, single):
  key = lambda r: (r['algorithm'], r['round'])
  # One row per (algorithm, round): only process 0 wrote them.
  assert sorted(map(key, multi)) == sorted(map(key, single)), (multi, single)
  assert len(set(map(key, multi))) == len(multi) == 6
  by_key = {key(r): r for r in single}
  for r in multi:
    s = by_key[key(r)]
    assert r['kept_params'] == s['kept_params'], key(r)
    for field in ('test_accuracy', 'train_loss'):
      if s[field] is None:
        assert r[field] is None, (key(r), field)
      else:
        # float rounding: a CPU's native convolution sums in an order that depends on the
        # threads each process has
        np.testing.assert_allclose(r[field], s[field], rtol=1e-4, atol=1e-5,
                                   err_msg=f'{key(r)} {field}')


def test_two_process_training_run_writes_once_equals_single_and_resumes(tmp_path):
  multi, single = tmp_path / 'multi', tmp_path / 'single'
  logs = _two_process_run(multi, ('single process', _start_main(single)))
  # Every file of the one-process run, each written once (by process 0), nothing half-written.
  files = lambda d: sorted(os.listdir(d))
  assert files(multi) == files(single), (files(multi), files(single))
  assert not [f for f in files(multi) if f.endswith('.tmp')]
  assert files(multi / 'checkpoints' / 'fedavg') == ['1', '2']  # saved by both together
  _assert_rows_equal(_rows(multi), _rows(single))
  summary = json.loads((multi / 'summary.json').read_text())
  assert [r['algorithm'] for r in summary['rows']] == ['autoflip', 'fedavg']
  assert '| algorithm' in logs['process 0'][0] and '| algorithm' not in logs['process 1'][0]

  # A run cut short after fedavg's round-1 checkpoint: the same command resumes it.
  shutil.rmtree(multi / 'checkpoints' / 'fedavg' / '2')
  progress = json.loads((multi / 'progress.json').read_text())
  del progress['fedavg']
  (multi / 'progress.json').write_text(json.dumps(progress))
  (multi / 'summary.json').unlink()
  logs = _two_process_run(multi)
  for name in ('process 0', 'process 1'):
    assert '[fedavg] resumed from the checkpoint of round 1' in logs[name][1], name
  _assert_rows_equal(_rows(multi), _rows(single))
  assert (multi / 'summary.json').exists()
