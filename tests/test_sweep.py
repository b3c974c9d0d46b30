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


def test_pareto_puts_autoflip_and_its_structured_controls_at_equal_flops(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.pareto', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--tp=0.4', '--last=1', '--config.e_exp=1', *TINY], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / 'pareto.json').read_text())
  assert [(r['algorithm'], r['tp']) for r in rows] == [
      ('fedavg', None), ('autoflip', 0.4), ('random', 0.4), ('magnitude', 0.4)]
  flops = {r['algorithm']: r['flops_fraction'] for r in rows}
  assert flops['fedavg'] == 1.0 and flops['autoflip'] < 0.9
  # The controls remove as many units per layer as AutoFLIP: about the same structured FLOPs.
  for control in ('random', 'magnitude'):
    assert abs(flops[control] - flops['autoflip']) < 0.05, flops
  summary = json.loads((tmp_path / 'tp0.4' / 'summary.json').read_text())
  units = {r['algorithm']: r['units'] for r in summary['rows']}
  assert units['random'] == units['magnitude'] == units['autoflip']
  assert os.path.getsize(tmp_path / 'pareto.png') > 10_000
  assert '| autoflip | 0.4 | 1 |' in proc.stdout


def test_robustness_grid_scores_every_mask_against_the_clean_one(tmp_path):
  from autoflip_jax import privacy  # noqa: PLC0415
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.robustness', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--jaccard_only', '--fractions=0.5', '--aggregations=median',
       '--exploration_noise=1', '--training_noise=2', '--config.e_exp=1', *TINY], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / 'robustness.json').read_text())['rows']
  assert [r['grid'] for r in rows] == ['attack', 'private_exploration', 'private_training']
  attacked, private, training = rows
  assert (attacked['aggregation'], attacked['attack_fraction']) == ('median', 0.5)
  # Half the explorers inverting their reports moves the median's mask away from the clean
  # mean's mask and from the unattacked median's.
  assert attacked['jaccard'] < 1.0 and attacked['jaccard_same_aggregation'] < 1.0
  assert private['epsilon'] == privacy.exploration_epsilon(1.0, 1e-5)
  # DP-FedAvg leaves the mask alone (Jaccard 1) and has its own ε.
  assert training['jaccard'] == 1.0 and training['epsilon'] > 0
  assert all(r['test_accuracy'] is None for r in rows)  # --jaccard_only: no training runs
