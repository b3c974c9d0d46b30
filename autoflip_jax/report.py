"""The final table and the plots, all made from the rows the run wrote."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


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


def table(rows: list[dict]) -> str:
  """A Markdown table, one row per algorithm (bytes include AutoFLIP's exploration)."""
  header = [c[0] for c in _COLUMNS]
  lines = []
  for row in rows:
    cells = []
    for _, key, fmt in _COLUMNS:
      if key is None:
        cells.append(f"{row['kept_params']:,}/{row['total_params']:,}")
      else:
        cells.append(fmt(row[key]))
    lines.append(cells)
  widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
  fmt_line = lambda cells: '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths)) + ' |'
  out = [fmt_line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
  out += [fmt_line(l) for l in lines]
  return '\n'.join(out)


def read_metrics(path: str) -> dict[str, list[dict]]:
  """`metrics.jsonl` grouped by algorithm, in file order."""
  by_alg: dict[str, list[dict]] = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      by_alg.setdefault(row['algorithm'], []).append(row)
  return by_alg


def plot_metrics(metrics_path: str, out_dir: str) -> list[str]:
  """Accuracy against round and against cumulative bytes (up + down); returns the PNG paths."""
  by_alg = read_metrics(metrics_path)
  paths = []
  for name, xlabel, xkey in (
      ('accuracy_vs_round.png', 'round', lambda r: r['round']),
      ('accuracy_vs_bytes.png', 'cumulative bytes sent (up + down, MB)',
       lambda r: (r['cum_bytes_up'] + r['cum_bytes_down']) / 1e6)):
    fig, ax = plt.subplots(figsize=(6, 4))
    for alg, rows in by_alg.items():
      ax.plot([xkey(r) for r in rows], [r['test_accuracy'] for r in rows], marker='.', label=alg)
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
