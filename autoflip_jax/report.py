"""The final table and the plots, all made from the rows the run wrote; the comparison of
algorithms (`write_comparison`, for experiments/compare.py).

With several training seeds (`config.seeds`) every figure is over seeds: the table gives
mean ± std per algorithm (`aggregate`), the plots draw the mean with a ±std band.
"""

from __future__ import annotations

import json
import os
import statistics

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def human_bytes(n: float) -> str:
  for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
    if abs(n) < 1000 or unit == 'TB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.2f} {unit}'
    n /= 1000.0
  raise AssertionError


def human_count(n: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(n) >= scale:
      return f'{n / scale:.2f}{unit}'
  return f'{n:.0f}'


_COLUMNS = (
    ('algorithm', 'algorithm', str),
    ('test acc', 'test_accuracy', lambda v: f'{v:.4f}'),
    ('kept/total params', None, None),
    ('compression', 'compression', lambda v: f'{v:.2f}x'),
    ('FLOPs/ex sparse', 'flops_per_example', human_count),
    ('FLOPs/ex structured', 'flops_structured', human_count),
    ('FLOPs/ex dense', 'flops_dense', human_count),
    ('bytes up', 'bytes_up_total', human_bytes),
    ('bytes down', 'bytes_down_total', human_bytes),
)


def aggregate(rows: list[dict]) -> list[dict]:
  """Per algorithm (first-seen order): its seeds and the mean and std over seeds of every
  number of its summary rows (`<field>_mean`, `<field>_std`; std 0 for one seed)."""
  groups: dict[str, list[dict]] = {}
  for row in rows:
    groups.setdefault(row['algorithm'], []).append(row)
  out = []
  for name, group in groups.items():
    agg = {'algorithm': name, 'seeds': [r.get('seed') for r in group]}
    diverged = [r.get('seed') for r in group if r.get('diverged_round')]
    if diverged:  # config.on_divergence=record: their accuracy is that of a non-finite model
      agg['diverged_seeds'] = diverged
    for key, value in group[0].items():
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or key in ('seed', 'diverged_round')):
        continue
      values = [float(r[key]) for r in group if isinstance(r.get(key), (int, float))]
      agg[f'{key}_mean'] = statistics.fmean(values)
      agg[f'{key}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
    out.append(agg)
  return out


def table(rows: list[dict]) -> str:
  """A Markdown table, one row per algorithm (bytes include AutoFLIP's exploration).

  With several seeds of an algorithm: mean ± std of the accuracy, means of the rest.
  """
  extra = _privacy_columns(rows)
  if any(len(a['seeds']) > 1 for a in aggregate(rows)):
    if any(r.get('diverged_round') for r in rows):
      extra += (('diverged', 'diverged_seeds', None),)
    return _seed_table(aggregate(rows), extra)
  if any(r.get('diverged_round') for r in rows):
    extra += (('diverged at round', 'diverged_round', lambda v: '-' if not v else str(v)),)
  columns = _COLUMNS + extra
  header = [c[0] for c in columns]
  lines = []
  for row in rows:
    cells = []
    for _, key, fmt in columns:
      if key is None:
        cells.append(f"{row['kept_params']:,}/{row['total_params']:,}")
      else:
        cells.append(fmt(row.get(key)))
    lines.append(cells)
  return _markdown(header, lines)


def _epsilon(value) -> str:
  return '-' if value is None else f'{value:.3g}'


def _privacy_columns(rows: list[dict]) -> tuple:
  """ε columns, only when some row is private (the default table is unchanged)."""
  return tuple((title, key, _epsilon) for title, key in (
      ('ε exploration', 'epsilon_exploration'), ('ε training', 'epsilon'))
      if any(r.get(key) is not None for r in rows))


def _seed_table(aggregated: list[dict], extra: tuple = ()) -> str:
  header = ['algorithm', 'seeds'] + [c[0] for c in _COLUMNS[1:] + extra]
  lines = []
  for a in aggregated:
    cells = [a['algorithm'], str(len(a['seeds'])),
             f"{a['test_accuracy_mean']:.4f} ± {a['test_accuracy_std']:.4f}",
             f"{a['kept_params_mean']:,.0f}/{a['total_params_mean']:,.0f}"]
    cells += [fmt(a[f'{key}_mean']) for _, key, fmt in _COLUMNS[3:]]
    cells += [_diverged_seeds(a) if key == 'diverged_seeds' else fmt(a.get(f'{key}_mean'))
              for _, key, fmt in extra]
    lines.append(cells)
  return _markdown(header, lines)


def _diverged_seeds(aggregated: dict) -> str:
  """'2/3 (seeds 1, 2)': the seeds of an algorithm that diverged (on_divergence=record)."""
  seeds = aggregated.get('diverged_seeds', [])
  if not seeds:
    return '-'
  names = 'seed' if len(seeds) == 1 else 'seeds'
  return f"{len(seeds)}/{len(aggregated['seeds'])} ({names} {', '.join(map(str, seeds))})"


def read_runs(path: str) -> dict[str, dict[int, list[dict]]]:
  """`metrics.jsonl` as {algorithm: {seed: rows in round order}} (a resumed run appends its
  redone rounds at the end of the file)."""
  runs: dict[str, dict[int, list[dict]]] = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      runs.setdefault(row['algorithm'], {}).setdefault(row.get('seed'), []).append(row)
  for by_seed in runs.values():
    for rows in by_seed.values():
      rows.sort(key=lambda r: r['round'])
  return runs


def _std(values) -> float:
  return statistics.stdev(values) if len(values) > 1 else 0.0


def tail_accuracy(rows: list[dict], last: int) -> float:
  """Mean test accuracy over the last `last` evaluated rounds of one (algorithm, seed)'s rows,
  in round order (a redone round counts once: its last row)."""
  rows = list({r['round']: r for r in rows}.values())
  evaluated = [r['test_accuracy'] for r in rows if r.get('test_accuracy') is not None]
  if not evaluated:
    raise ValueError('no evaluated round')
  return statistics.fmean(evaluated[-last:])


def paired_differences(a: dict, b: dict) -> dict:
  """`a` minus `b` over the seeds both hold ({seed: value}): the per-seed differences, their
  mean and sample std, the paired t statistic with its two-sided p-value and 95% interval of
  the mean (Student's t, n − 1 degrees of freedom), and how many seeds `a` is above `b`."""
  from scipy import stats  # a dependency of scikit-learn; only this function needs it
  seeds = sorted(set(a) & set(b))
  diff = [a[s] - b[s] for s in seeds]
  out = dict(seeds=seeds, per_seed=diff, mean=statistics.fmean(diff) if diff else None,
             std=None, t=None, p=None, ci95=None, wins=sum(d > 0 for d in diff),
             losses=sum(d < 0 for d in diff))
  if len(diff) > 1:
    out.update(std=statistics.stdev(diff), ci95=[out['mean'], out['mean']])
    if out['std'] > 0:
      test = stats.ttest_1samp(diff, 0.0)
      ci = test.confidence_interval(0.95)
      out.update(t=float(test.statistic), p=float(test.pvalue),
                 ci95=[float(ci.low), float(ci.high)])
  return out


def seed_summary(workdir: str, last: int) -> list[dict]:
  """Per algorithm of a finished workdir, over its seeds (mean ± std): the test accuracy of the
  final round and averaged over the last `last` evaluated rounds, the structured FLOPs (a
  fraction of dense), compression, and the median seconds of a round for one seed (the runner
  trains a run's seeds one after another in each round)."""
  out = []
  for name, by_seed in read_runs(os.path.join(workdir, 'metrics.jsonl')).items():
    final, tail, flops, compression, seconds = [], [], [], [], []
    for rows in by_seed.values():
      rows = list({r['round']: r for r in rows}.values())  # a redone round: its last row
      evaluated = [r for r in rows if r.get('test_accuracy') is not None]
      final.append(evaluated[-1]['test_accuracy'])
      tail.append(tail_accuracy(rows, last))
      flops.append(rows[-1]['flops_structured'] / rows[-1]['flops_dense'])
      compression.append(rows[-1]['compression'])
      seconds += [r['round_seconds'] for r in rows if r['round'] > 0]
    out.append(dict(algorithm=name, seeds=len(final),
                    final_mean=statistics.fmean(final), final_std=_std(final),
                    last_mean=statistics.fmean(tail), last_std=_std(tail),
                    flops_fraction=statistics.fmean(flops),
                    compression=statistics.fmean(compression),
                    round_seconds=statistics.median(seconds) / len(final) if seconds else None))
  return out


def plot_metrics(metrics_path: str, out_dir: str) -> list[str]:
  """Accuracy against round and against cumulative bytes (up + down); returns the PNG paths.

  One line per algorithm; with several seeds, their mean and a ±std band (over the rounds
  every seed has reached).
  """
  runs = read_runs(metrics_path)
  paths = []
  for name, xlabel, xkey in (
      ('accuracy_vs_round.png', 'round', lambda r: r['round']),
      ('accuracy_vs_bytes.png', 'cumulative bytes sent (up + down, MB)',
       lambda r: (r['cum_bytes_up'] + r['cum_bytes_down']) / 1e6)):
    fig, ax = plt.subplots(figsize=(6, 4))
    for alg, by_seed in runs.items():
      count = min(len(rows) for rows in by_seed.values())
      x = np.mean([[xkey(r) for r in rows[:count]] for rows in by_seed.values()], axis=0)
      acc = np.array([[r['test_accuracy'] for r in rows[:count]] for rows in by_seed.values()])
      mean = acc.mean(axis=0)
      legend = alg if len(by_seed) == 1 else f'{alg} ({len(by_seed)} seeds)'
      line, = ax.plot(x, mean, marker='.', label=legend)
      if len(by_seed) > 1:
        std = acc.std(axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('test accuracy')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
  return paths


# The comparison of algorithms (experiments/compare.py): one row per algorithm, one table, plots.

def reach_target(rows: list[dict], target: float) -> dict | None:
  """The first metrics row (round order) with test accuracy >= `target`, or None."""
  return next((r for r in rows if r['test_accuracy'] >= target), None)


def comparison_rows(runs: dict[str, dict[int, list[dict]]], summaries: list[dict],
                    target: float) -> list[dict]:
  """Per algorithm: final accuracy, compression, FLOPs, and the bytes to reach `target` and total.

  Bytes are cumulative over the run's rows, so they include the work before round 1 (AutoFLIP's
  exploration, PruneFL's initial pruning). `*_to_target` are None when `target` is not reached.
  """
  out = []
  for s in summaries:
    rows = runs[s['algorithm']][s.get('seed')]
    hit = reach_target(rows, target)
    out.append(dict(
        algorithm=s['algorithm'], seed=s.get('seed'), final_accuracy=s['test_accuracy'],
        kept_params=s['kept_params'], total_params=s['total_params'],
        compression=s['compression'], flops_per_example=s['flops_per_example'],
        flops_dense=s['flops_dense'], target_accuracy=target,
        target_round=hit['round'] if hit else None,
        bytes_up_to_target=hit['cum_bytes_up'] if hit else None,
        bytes_down_to_target=hit['cum_bytes_down'] if hit else None,
        bytes_up_total=rows[-1]['cum_bytes_up'], bytes_down_total=rows[-1]['cum_bytes_down']))
  return out


def _markdown(header: list[str], lines: list[list[str]]) -> str:
  widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
  fmt_line = lambda cells: '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'
  out = [fmt_line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
  return '\n'.join(out + [fmt_line(l) for l in lines])


def comparison_table(rows: list[dict]) -> str:
  """The comparison as one Markdown table ('not reached' where the target was not reached);
  one line per algorithm and seed."""
  if not rows:
    return ''
  target = rows[0]['target_accuracy']
  header = ['algorithm', 'final acc', 'kept/total params', 'compression', 'FLOPs/ex',
            f'round to {target:.2f}', f'up to {target:.2f}', f'down to {target:.2f}',
            'up total', 'down total']
  reached = lambda r, key, fmt: fmt(r[key]) if r['target_round'] is not None else 'not reached'
  seeds = len({r.get('seed') for r in rows}) > 1
  name = lambda r: f"{r['algorithm']} (seed {r['seed']})" if seeds else r['algorithm']
  lines = [[name(r), f"{r['final_accuracy']:.4f}",
            f"{r['kept_params']:,}/{r['total_params']:,}", f"{r['compression']:.2f}x",
            human_count(r['flops_per_example']), reached(r, 'target_round', str),
            reached(r, 'bytes_up_to_target', human_bytes),
            reached(r, 'bytes_down_to_target', human_bytes),
            human_bytes(r['bytes_up_total']), human_bytes(r['bytes_down_total'])]
           for r in rows]
  return _markdown(header, lines)


def plot_tradeoff(rows: list[dict], out_dir: str) -> str:
  """Final accuracy against compression, one labelled point per algorithm; returns the path."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for r in rows:
    ax.scatter(r['compression'], r['final_accuracy'], s=40)
    ax.annotate(r['algorithm'], (r['compression'], r['final_accuracy']),
                textcoords='offset points', xytext=(5, 4), fontsize=9)
  ax.set_xlabel('compression (total / kept parameters)')
  ax.set_ylabel('final test accuracy')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(out_dir, 'accuracy_vs_compression.png')
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_comparison(workdir: str, summaries: list[dict], target: float) -> list[str]:
  """`comparison.md`, `comparison.json` and the three plots in `workdir`; returns the paths."""
  rows = comparison_rows(read_runs(os.path.join(workdir, 'metrics.jsonl')), summaries, target)
  paths = [os.path.join(workdir, 'comparison.md'), os.path.join(workdir, 'comparison.json')]
  with open(paths[0], 'w') as f:
    f.write(comparison_table(rows) + '\n')
  with open(paths[1], 'w') as f:
    json.dump({'target_accuracy': target, 'rows': rows}, f, indent=2)
  paths += plot_metrics(os.path.join(workdir, 'metrics.jsonl'), workdir)
  return paths + [plot_tradeoff(rows, workdir)]
