"""The command line: `python -m experiments.main --config=... --workdir=... --config.x=y`."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.num_clients=4', '--config.clients_per_round=2', '--config.num_rounds=1',
        '--config.batch_size=100', '--config.e_exp=1', '--config.local_epochs=1',
        '--config.model_config.channels=(4, 8)', '--config.model_config.hidden=16']


def _main(workdir, *flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run(
      [sys.executable, '-m', 'experiments.main', '--config=experiments/configs/default.py',
       f'--workdir={workdir}', *flags], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=300)


def test_overrides_reach_the_run_and_table_is_printed(tmp_path):
  proc = _main(tmp_path, *TINY, '--config.tp=0.4', '--config.algorithm=autoflip')
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['config']['tp'] == 0.4
  assert [r['algorithm'] for r in summary['rows']] == ['autoflip']
  assert '| algorithm' in proc.stdout and 'autoflip' in proc.stdout
  # The console: our progress lines, not orbax's dozens of INFO lines per checkpoint; those
  # are in the log file with the progress lines.
  assert 'round 1/1' in proc.stderr  # per-round progress
  assert 'CheckpointManager' not in proc.stderr and 'orbax' not in proc.stderr, proc.stderr
  log = (tmp_path / 'log.txt').read_text()
  assert 'round 1/1' in log and 'CheckpointManager' in log


def test_bad_flag_fails_fast_with_the_field_named(tmp_path):
  proc = _main(tmp_path, *TINY, '--config.tp=1.5')
  assert proc.returncode != 0
  assert 'config.tp=1.5 must be a number in [0.0, 1.0)' in proc.stderr
  assert not (tmp_path / 'metrics.jsonl').exists()
