"""The benchmarks run as a user runs them, on CI-sized configs: each ends in its JSON line.

Their figures are not checked here (speed goals live in the benchmarks themselves, never in
timed tests); what is checked is that they still build the run's round (`Setup.round_fn`) and
report what their README tables read.
"""

import json
import os
import subprocess
import sys

from tests.test_sweep import ROOT


def _run(*args) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run([sys.executable, '-m', *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pruned_round_times_the_shrunk_lstm_beside_fedavg():
  row = _run('benchmarks.pruned_round', '--config=experiments/configs/shakespeare_lstm.py:small',
             '--repeats=1')
  assert set(row['round_seconds']) == {'fedavg', 'autoflip', 'autoflip_full'}
  assert row['params_shrunk'] < row['params_dense'] and row['flops_ratio'] > 1.0
  assert row['round_speedup'] == row['round_seconds']['fedavg'] / row['round_seconds']['autoflip']


def test_round_throughput_reference_round_reports_flops_against_the_peak():
  row = _run('benchmarks.round_throughput', '--models=', '--cohorts=', '--repeats=1',
             '--matmul=128', '--config=experiments/configs/femnist_cnn.py:small')
  ref = row['reference']
  assert ref['model'] == 'cnn' and ref['seconds'] > 0
  assert row['reference_fraction_of_peak'] == row['reference_gflops'] / row['matmul_peak_gflops']
  assert ref['xla_defaults_seconds'] > 0
  assert ref['speedup_over_xla_defaults'] == ref['xla_defaults_seconds'] / ref['seconds']


def test_skewed_round_compares_the_layouts():
  row = _run('benchmarks.skewed_round', '--config=experiments/configs/shakespeare_lstm.py:small',
             '--rounds=1')
  layouts = {r['layout']: r for r in row['layouts']}
  assert set(layouts) == {'vmap_largest', 'one_largest', 'one_cohort', 'one_cohort_cap'}
  assert layouts['one_cohort_cap']['max_local_steps'] == 4
  assert all(r['memory_mib'] > 0 for r in layouts.values())
