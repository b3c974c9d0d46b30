"""experiments.paired and report.paired_differences: seed-by-seed comparisons of finished runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from autoflip_jax import report
from experiments import paired

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(path, accuracies, rounds=5):
  """A metrics.jsonl whose (algorithm, seed) rows end at accuracies[algorithm][seed] for the
  last two rounds and are 0.1 before (round 0 not evaluated, as a run with eval_every > 1)."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    for algorithm, by_seed in accuracies.items():
      for seed, final in by_seed.items():
        for r in range(rounds + 1):
          acc = None if r == 0 else (final if r > rounds - 2 else 0.1)
          f.write(json.dumps(dict(round=r, algorithm=algorithm, seed=seed,
                                  test_accuracy=acc)) + '\n')
  return path


def test_tail_accuracy_counts_evaluated_rounds_and_a_redone_round_once():
  rows = [dict(round=0, test_accuracy=None), dict(round=1, test_accuracy=0.2),
          dict(round=2, test_accuracy=0.4), dict(round=2, test_accuracy=0.6)]  # round 2 redone
  assert report.tail_accuracy(rows, 2) == pytest.approx((0.2 + 0.6) / 2)
  assert report.tail_accuracy(rows, 10) == pytest.approx(0.4)
  with pytest.raises(ValueError, match='no evaluated round'):
    report.tail_accuracy([dict(round=0, test_accuracy=None)], 1)


def test_paired_differences_match_scipy_paired_t_test():
  a = {0: 0.80, 1: 0.75, 2: 0.90, 3: 0.70, 7: 0.5}
  b = {0: 0.78, 1: 0.76, 2: 0.85, 3: 0.66, 5: 0.9}  # seeds 5 and 7 unpaired: left out
  out = report.paired_differences(a, b)
  diff = np.array([0.02, -0.01, 0.05, 0.04])
  assert out['seeds'] == [0, 1, 2, 3] and np.allclose(out['per_seed'], diff)
  assert out['mean'] == pytest.approx(diff.mean()) and out['std'] == pytest.approx(diff.std(ddof=1))
  test = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)])
  assert out['t'] == pytest.approx(test.statistic) and out['p'] == pytest.approx(test.pvalue)
  half = stats.t.ppf(0.975, 3) * diff.std(ddof=1) / 2
  assert np.allclose(out['ci95'], [diff.mean() - half, diff.mean() + half])
  assert (out['wins'], out['losses']) == (3, 1)
  one = report.paired_differences({0: 0.5}, {0: 0.4})
  assert one['mean'] == pytest.approx(0.1) and one['std'] is None and one['p'] is None


def test_compare_pairs_each_algorithm_with_the_references_of_its_own_run(tmp_path):
  adam = _write_run(tmp_path / 'adam', dict(autoflip={0: 0.6, 1: 0.7}, random={0: 0.65, 1: 0.72}))
  sgd = _write_run(tmp_path / 'sgd', dict(autoflip={0: 0.7, 1: 0.69}, random={0: 0.6, 1: 0.7}))
  entries = paired.tail_per_seed([paired.parse_run(str(adam)), paired.parse_run(f'S={sgd}')], 2)
  assert sorted(entries) == ['S/autoflip', 'S/random', 'adam/autoflip', 'adam/random']
  rows = {(r['entry'], r['against']): r for r in
          paired.compare(entries, ['random'], [])}
  assert sorted(rows) == [('S/autoflip', 'S/random'), ('adam/autoflip', 'adam/random')]
  assert np.allclose(rows['adam/autoflip', 'adam/random']['per_seed'], [-0.05, -0.02])
  assert np.allclose(rows['S/autoflip', 'S/random']['per_seed'], [0.10, -0.01])
  # Across runs, by full name; --only picks the entries.
  cross = paired.compare(entries, ['adam/autoflip'], ['S/autoflip'])
  assert len(cross) == 1 and np.allclose(cross[0]['per_seed'], [0.1, -0.01])
  assert cross[0]['wins'] == 1 and not cross[0]['rounds_differ']


def test_paired_refuses_bad_input_with_a_message(tmp_path):
  with pytest.raises(ValueError, match='holds no metrics.jsonl'):
    paired.parse_run(str(tmp_path / 'missing'))
  run = _write_run(tmp_path / 'r', dict(autoflip={0: 0.6}, fedavg={0: 0.7}))
  entries = paired.tail_per_seed([paired.parse_run(str(run))], 2)
  with pytest.raises(ValueError, match='no run holds it'):
    paired.compare(entries, ['random'], [])
  with pytest.raises(ValueError, match='--only'):
    paired.compare(entries, ['fedavg'], ['prunefl'])
  with pytest.raises(ValueError, match='--last=0'):
    paired.tail_per_seed([paired.parse_run(str(run))], 0)
  with pytest.raises(ValueError, match='labels must differ'):
    paired.tail_per_seed([('x', str(run)), ('x', str(run))], 2)


def test_paired_command_prints_the_table_and_writes_its_json(tmp_path):
  run = _write_run(tmp_path / 'cmp', dict(autoflip={0: 0.80, 1: 0.82, 2: 0.84},
                                          random={0: 0.78, 1: 0.79, 2: 0.83},
                                          fedavg={0: 0.81, 1: 0.83, 2: 0.86}), rounds=12)
  out = tmp_path / 'paired.json'
  done = subprocess.run([sys.executable, '-m', 'experiments.paired', f'--run={run}',
                         '--against=random,fedavg', '--last=2', f'--out={out}'],
                        cwd=ROOT, capture_output=True, text=True, check=True)
  assert '| autoflip | random | 3 | +2.0 ± 1.0 |' in done.stdout
  assert '| autoflip | fedavg | 3 | -1.3 ± 0.6 |' in done.stdout
  data = json.loads(out.read_text())
  assert json.loads(done.stdout.strip().splitlines()[-1]) == data
  rows = {r['against']: r for r in data['paired']}
  assert rows['random']['wins'] == 3 and rows['fedavg']['wins'] == 0
  assert data['entries']['autoflip']['accuracy'] == {'0': 0.8, '1': 0.82, '2': 0.84}
