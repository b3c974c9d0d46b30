"""The comparison runner: every algorithm on one seed, then the table, its JSON and the plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from autoflip_jax import config_checks, models, report
from autoflip_jax.algorithms import controls
from experiments.configs import compare as compare_config
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGORITHMS = compare_config.get_config().algorithm.split(',')
PLOTS = ('accuracy_vs_round.png', 'accuracy_vs_bytes.png', 'accuracy_vs_compression.png')


TINY = ['--config.num_clients=4', '--config.clients_per_round=2', '--config.num_rounds=1',
        '--config.batch_size=100', '--config.e_exp=1', '--config.local_epochs=1',
        '--config.model_config.channels=(4, 8)', '--config.model_config.hidden=16',
        '--config.data.max_test_examples=200', '--config.prunefl_init_steps=1',
        '--config.checkpoint_every=100']


def _compare(workdir, *flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             JAX_DISABLE_MOST_OPTIMIZATIONS='1')  # as tests/conftest.py, in this process
  return subprocess.run(
      [sys.executable, '-m', 'experiments.compare', '--config=experiments/configs/compare.py',
       f'--workdir={workdir}', *TINY, *flags], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """The command line with every algorithm of the comparison config, target 0."""
  workdir = str(tmp_path_factory.mktemp('compare'))
  proc = _compare(workdir, '--config.target_accuracy=0.0')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summaries = json.load(f)['rows']
  return proc, workdir, summaries


def test_writes_one_row_per_algorithm_in_order(run):
  _, workdir, summaries = run
  with open(os.path.join(workdir, 'comparison.json')) as f:
    table = json.load(f)
  assert table['target_accuracy'] == 0.0
  assert [r['algorithm'] for r in table['rows']] == ALGORITHMS
  by_alg = {a: runs[0] for a, runs in
            report.read_runs(os.path.join(workdir, 'metrics.jsonl')).items()}
  for row, summary in zip(table['rows'], summaries):
    last = by_alg[row['algorithm']][-1]
    assert row['final_accuracy'] == summary['test_accuracy'] == last['test_accuracy']
    assert row['compression'] == summary['compression']
    assert row['flops_per_example'] == summary['flops_per_example']
    assert (row['bytes_up_total'], row['bytes_down_total']) == (
        last['cum_bytes_up'], last['cum_bytes_down'])
    # Target 0 is reached by the starting point: the bytes spent before round 1.
    first = by_alg[row['algorithm']][0]
    assert row['target_round'] == 0
    assert (row['bytes_up_to_target'], row['bytes_down_to_target']) == (
        first['cum_bytes_up'], first['cum_bytes_down'])
  markdown = open(os.path.join(workdir, 'comparison.md')).read()
  assert markdown.count('\n') == len(ALGORITHMS) + 2
  for name in ALGORITHMS + list(PLOTS):
    if name.endswith('.png'):
      assert os.path.getsize(os.path.join(workdir, name)) > 10_000
    else:
      assert f'| {name} ' in markdown


def test_unreached_target_is_reported(run):
  _, workdir, summaries = run
  report.write_comparison(workdir, summaries, 1.0)
  with open(os.path.join(workdir, 'comparison.json')) as f:
    rows = json.load(f)['rows']
  assert all(r['target_round'] is None and r['bytes_up_to_target'] is None for r in rows)
  assert open(os.path.join(workdir, 'comparison.md')).read().count('not reached') == 3 * len(rows)


def test_controls_keep_autoflips_kernel_count_on_the_same_model(run):
  _, _, summaries = run
  config = tiny_config()  # the model of TINY
  by_alg = {s['algorithm']: s for s in summaries}
  auto = by_alg['autoflip']
  assert auto['kernel_kept'] < auto['total_params']
  for name in ('random', 'magnitude'):
    row = by_alg[name]
    assert row['kernel_kept'] == auto['kernel_kept']
    assert row['sparsity_source'] == 'autoflip run'
    assert row['total_params'] == auto['total_params']
    # As many units removed per layer as AutoFLIP (`control_structure`), so the same biases go
    # with them: every other bias is kept, and the kept totals agree.
    assert row['units'] == auto['units'] and row['units'] != {
        k: f"{v.split('/')[1]}/{v.split('/')[1]}" for k, v in auto['units'].items()}
    params = models.get_model(config, 10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    non_kernel = row['total_params'] - controls.kernel_count(params['params'])
    removed = sum(int(v.split('/')[1]) - int(v.split('/')[0]) for v in row['units'].values())
    assert row['kept_params'] == row['kernel_kept'] + non_kernel - removed == auto['kept_params']


def test_command_line_prints_the_table_and_checks_the_target(run, tmp_path):
  proc, _, _ = run
  assert proc.stdout.count('| magnitude ') == 2  # the main table, then the comparison
  assert 'not reached' not in proc.stdout
  bad = _compare(tmp_path, '--config.target_accuracy=1.5', '--config.algorithm=fedavg')
  assert bad.returncode != 0
  assert 'config.target_accuracy=1.5 must be a number in [0.0, 1.0]' in bad.stderr
  assert not (tmp_path / 'metrics.jsonl').exists()


@pytest.mark.parametrize('variant', ['shakespeare', 'shakespeare_medium'])
def test_shakespeare_variants_are_valid_lstm_comparisons(variant):
  config = compare_config.get_config(variant)
  config_checks.validate_config(config)
  assert config.model == 'lstm' and config.data.name == 'shakespeare'
  assert config.algorithm.split(',') == ALGORITHMS
  if variant == 'shakespeare_medium':  # what docs/baselines.md measured with it
    assert (config.num_clients, config.clients_per_round, config.local_epochs,
            config.num_rounds, tuple(config.model_config.hidden)) == (60, 5, 5, 30, (64, 64))
  with pytest.raises(ValueError, match='shakespeare_medium'):
    compare_config.get_config('shakespeare_large')
