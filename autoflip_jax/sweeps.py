"""Grids over AutoFLIP's knobs (Tp, Eexp, explorer fraction), each point in its own workdir.

A sweep is a list of config overrides; each point runs `train.train_and_evaluate` in
`<workdir>/<point name>`, so every point resumes on its own, and the figures are drawn from the
points' saved `summary.json` files: the Tp trade-off (accuracy and compression against Tp, the
paper's ablation) and the Eexp ablation (accuracy against exploration epochs).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

KNOBS = ('tp', 'e_exp', 'c_exp')


def grid(tp: Sequence[float], e_exp: Sequence[int], c_exp: Sequence[float]) -> list[dict]:
  """Every combination, Tp varying fastest."""
  return [dict(c_exp=c, e_exp=e, tp=t) for c, e, t in itertools.product(c_exp, e_exp, tp)]


def point_name(point: dict) -> str:
  return '_'.join(f'{k}={point[k]:g}' for k in KNOBS if k in point)


def collect(workdir: str, points: list[dict]) -> list[dict]:
  """One row per finished point: its knobs and AutoFLIP's final figures."""
  rows = []
  for point in points:
    path = os.path.join(workdir, point_name(point), 'summary.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      summary = json.load(f)
    auto = [r for r in summary['rows'] if r['algorithm'] == 'autoflip'][0]
    rows.append(dict(point, test_accuracy=auto['test_accuracy'],
                     compression=auto['compression'], sparsity=auto['sparsity'],
                     flops_per_example=auto['flops_per_example'],
                     bytes_total=auto['bytes_up_total'] + auto['bytes_down_total']))
  return rows


def plot(rows: list[dict], out_dir: str, reference_accuracy: float | None = None) -> list[str]:
  """`tp_tradeoff.png` and, with more than one Eexp, `e_exp_ablation.png`."""
  paths = []
  groups = sorted({(r['e_exp'], r['c_exp']) for r in rows})
  fig, (ax_acc, ax_comp) = plt.subplots(1, 2, figsize=(10, 4))
  for e, c in groups:
    pts = sorted((r for r in rows if (r['e_exp'], r['c_exp']) == (e, c)), key=lambda r: r['tp'])
    label = f'e_exp={e}, c_exp={c:g}'
    ax_acc.plot([r['tp'] for r in pts], [r['test_accuracy'] for r in pts], 'o-', label=label)
    ax_comp.plot([r['tp'] for r in pts], [r['compression'] for r in pts], 'o-', label=label)
  if reference_accuracy is not None:
    ax_acc.axhline(reference_accuracy, color='gray', ls='--', label='FedAvg')
  ax_acc.set(xlabel='Tp', ylabel='test accuracy', title='Accuracy against Tp')
  ax_comp.set(xlabel='Tp', ylabel='compression (total / kept)', title='Compression against Tp')
  for ax in (ax_acc, ax_comp):
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  paths.append(os.path.join(out_dir, 'tp_tradeoff.png'))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  if len({r['e_exp'] for r in rows}) > 1:
    fig, ax = plt.subplots(figsize=(6, 4))
    for tp in sorted({r['tp'] for r in rows}):
      pts = sorted((r for r in rows if r['tp'] == tp), key=lambda r: r['e_exp'])
      ax.plot([r['e_exp'] for r in pts], [r['test_accuracy'] for r in pts], 'o-',
              label=f'Tp={tp:g}')
    ax.set(xlabel='exploration epochs (e_exp)', ylabel='test accuracy', title='Eexp ablation')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, 'e_exp_ablation.png'))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
  return paths
