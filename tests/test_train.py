"""End to end: the main job on a tiny config writes the metrics, summary and plots it promises."""

import json
import math

import pytest

from autoflip_jax import accounting, report, train
from tests.helpers import tiny_config

FIELDS = ('round', 'algorithm', 'test_accuracy', 'train_loss', 'kept_params', 'total_params',
          'compression', 'flops_per_example', 'bytes_up', 'bytes_down')
TIMING = ('round_seconds',)


def _rows(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  config = tiny_config()
  summary = train.train_and_evaluate(config, str(workdir))
  return config, workdir, summary


def test_metrics_file_has_a_row_per_round_and_algorithm(run):
  config, workdir, _ = run
  rows = _rows(workdir)
  assert [(r['algorithm'], r['round']) for r in rows] == (
      [('autoflip', r) for r in range(config.num_rounds + 1)] +
      [('fedavg', r) for r in range(config.num_rounds + 1)])
  for row in rows:
    assert set(FIELDS) <= set(row)
    assert 0.0 <= row['test_accuracy'] <= 1.0
    if row['round'] > 0:
      assert math.isfinite(row['train_loss'])


def test_autoflip_prunes_and_fedavg_is_dense(run):
  _, workdir, _ = run
  rows = _rows(workdir)
  total = rows[0]['total_params']
  auto = [r for r in rows if r['algorithm'] == 'autoflip']
  fed = [r for r in rows if r['algorithm'] == 'fedavg']
  assert all(r['total_params'] == total for r in rows)
  # tp=0.3 with the strict tie rule prunes at least 30% of the kernels' weights.
  assert auto[-1]['kept_params'] < 0.75 * total
  assert auto[-1]['compression'] == pytest.approx(total / auto[-1]['kept_params'])
  assert auto[-1]['flops_per_example'] < fed[-1]['flops_per_example']
  assert all(r['kept_params'] == total and r['compression'] == 1.0 for r in fed)


def test_bytes_follow_the_encoding(run):
  config, workdir, _ = run
  rows = _rows(workdir)
  total = rows[0]['total_params']
  per_round = config.clients_per_round
  fed = [r for r in rows if r['algorithm'] == 'fedavg']
  assert fed[0]['bytes_up'] == 0
  for r in fed[1:]:
    assert r['bytes_up'] == r['bytes_down'] == per_round * total * 4
  auto = [r for r in rows if r['algorithm'] == 'autoflip']
  explorers = config.num_clients  # c_exp = 1
  assert auto[0]['bytes_up'] == auto[0]['bytes_down'] == explorers * total * 4
  kept = auto[1]['kept_params']
  assert auto[1]['bytes_up'] == per_round * kept * 4
  # The mask removed units: it travels as one bit per unit (4 + 8 + 16 of them) and a bitmap
  # over the shrunk model's parameters, cheaper than a bitmap over all of them.
  shrunk = auto[1]['shrunk_params']
  assert kept < shrunk < total and auto[1]['units_total'] == 4 + 8 + 16
  assert auto[1]['bytes_down'] == per_round * (kept * 4 + math.ceil(28 / 8) + math.ceil(shrunk / 8))
  assert math.ceil(28 / 8) + math.ceil(shrunk / 8) < accounting.mask_bitmap_bytes(total)
  assert auto[2]['bytes_down'] == per_round * kept * 4  # the mask is sent once
  assert auto[-1]['cum_bytes_up'] == sum(r['bytes_up'] for r in auto)


def test_summary_and_plots(run):
  config, workdir, summary = run
  saved = json.loads((workdir / 'summary.json').read_text())
  assert [r['algorithm'] for r in saved['rows']] == ['autoflip', 'fedavg']
  assert saved['config']['tp'] == config.tp
  assert saved['rows'][0]['test_accuracy'] == summary[0]['test_accuracy']
  for name in ('accuracy_vs_round.png', 'accuracy_vs_bytes.png'):
    assert (workdir / name).stat().st_size > 10_000


def test_same_seed_same_metrics(run, tmp_path):
  _, workdir, _ = run
  train.train_and_evaluate(tiny_config(), str(tmp_path))
  strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
  assert strip(_rows(tmp_path)) == strip(_rows(workdir))


def test_guidance_per_round_sends_the_mask_every_round(tmp_path):
  config = tiny_config(algorithm='autoflip', guidance_per_round=True, num_rounds=2)
  train.train_and_evaluate(config, str(tmp_path))
  rows = _rows(tmp_path)
  total = rows[0]['total_params']
  for r in rows[1:]:
    mask = accounting.mask_bytes(r['kept_params'], total, r['shrunk_params'], r['units_total'])
    assert mask[0] > 0
    assert r['bytes_down'] == config.clients_per_round * (r['kept_params'] * 4 + mask[0])


def test_diverging_run_stops_with_round_and_clients_named(tmp_path):
  config = tiny_config(algorithm='fedavg', learning_rate=1e9, num_rounds=3)
  with pytest.raises(FloatingPointError, match=r'\[fedavg\] round 1: non-finite training loss'):
    train.train_and_evaluate(config, str(tmp_path))
  # What finished (round 0) is on disk.
  assert [r['round'] for r in _rows(tmp_path)] == [0]


def test_a_diverging_run_can_be_recorded_and_the_others_go_on(tmp_path):
  config = tiny_config(algorithm='fedavg,eflprune', learning_rate=1e9, num_rounds=3,
                       seeds='0,1', on_divergence='record')
  rows = train.train_and_evaluate(config, str(tmp_path))
  # Both algorithms ran to the end, every seed recorded as diverged in round 1.
  assert [(r['algorithm'], r['seed'], r['diverged_round']) for r in rows] == [
      ('fedavg', 0, 1), ('fedavg', 1, 1), ('eflprune', 0, 1), ('eflprune', 1, 1)]
  metrics = _rows(tmp_path)
  for name in ('fedavg', 'eflprune'):
    for seed in (0, 1):
      assert [r['round'] for r in metrics if r['algorithm'] == name and r['seed'] == seed] == [
          0, 1, 2, 3]
  with open(tmp_path / 'summary.json') as f:
    summary = json.load(f)
  assert [a['diverged_seeds'] for a in summary['aggregate']] == [[0, 1], [0, 1]]
  assert '2/2 (seeds 0, 1)' in report.table(rows)
  # A rerun finds the work done: the divergence is a result, not redone.
  again = train.train_and_evaluate(config, str(tmp_path))
  assert [r['diverged_round'] for r in again] == [1, 1, 1, 1]


def test_the_table_names_the_round_a_single_seed_diverged():
  row = dict(algorithm='fedavg', seed=0, test_accuracy=0.1, kept_params=10, total_params=10,
             compression=1.0, flops_per_example=1.0, flops_structured=1.0, flops_dense=1.0,
             bytes_up_total=1, bytes_down_total=1)
  assert 'diverged at round' not in report.table([row])
  table = report.table([dict(row, diverged_round=7)])
  assert 'diverged at round' in table and table.rstrip().endswith('| 7                 |')
