"""Multi-host: two local CPU processes joined by `jax.distributed.initialize`, the cohort split
over both, run the same two rounds as one process on one device."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from autoflip_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'tests', 'distributed_round_check.py')
TIMEOUT = 120


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(out, *args):
  # One CPU device per process; XLA's optimisation passes off for the tiny program's compile
  # time, in every process alike.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  return subprocess.Popen([sys.executable, SCRIPT, str(out), *map(str, args)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_all(procs):
  """Waits for every process (TIMEOUT s in all); kills the rest when one fails or hangs."""
  logs = []
  try:
    for name, p in procs:
      try:
        stdout, stderr = p.communicate(timeout=TIMEOUT)
      except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr = p.communicate()
        raise AssertionError(f'{name} timed out after {TIMEOUT} s:\n{stderr[-3000:]}')
      logs.append(f'--- {name} (rc {p.returncode}) ---\n{stdout[-2000:]}\n{stderr[-3000:]}')
      ok = any(line.startswith('OK ') for line in stdout.splitlines())
      assert p.returncode == 0 and ok, '\n'.join(logs)
  finally:
    for _, p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()


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
    np.testing.assert_allclose(p0[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)
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
