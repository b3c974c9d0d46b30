"""Sweeps: one sub-workdir per point, the Tp trade-off drawn from what the points saved."""

import json
import os
import subprocess
import sys

from autoflip_jax import sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.num_clients=4', '--config.clients_per_round=2', '--config.num_rounds=1',
        '--config.batch_size=100', '--config.local_epochs=1',
        '--config.model_config.channels=(4, 8)', '--config.model_config.hidden=16']


def test_grid_and_names():
  points = sweeps.grid([0.1, 0.3], [1, 5], [1.0])
  assert len(points) == 4
  assert points[0] == dict(c_exp=1.0, e_exp=1, tp=0.1)
  assert sweeps.point_name(points[1]) == 'tp=0.3_e_exp=1_c_exp=1'


def test_sweep_runs_every_point_and_plots(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--tp=0.2,0.6', '--e_exp=1', *TINY], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads((tmp_path / 'sweep.json').read_text())
  assert out['reference']['algorithm'] == 'fedavg'
  by_tp = {r['tp']: r for r in out['points']}
  assert set(by_tp) == {0.2, 0.6}
  # A higher Tp prunes more: at least 60% of the kernels' weights at Tp = 0.6.
  assert by_tp[0.6]['compression'] > by_tp[0.2]['compression'] > 1.0
  assert by_tp[0.6]['sparsity'] > 0.55
  for name in ('tp=0.2_e_exp=1_c_exp=1', 'tp=0.6_e_exp=1_c_exp=1', 'fedavg'):
    assert (tmp_path / name / 'metrics.jsonl').exists()
  assert (tmp_path / 'tp_tradeoff.png').stat().st_size > 10_000
