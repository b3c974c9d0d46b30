"""Accuracy against structured FLOPs over Tp: AutoFLIP and its controls at equal structure.

For every Tp of `--tp`, one sub-workdir `tp<Tp>` runs AutoFLIP and the random and magnitude
controls (`config.control_structure`: the same units removed per layer, then the same kept kernel
count) on the config's seeds (`--config.seeds=0,1,2`); FedAvg runs once (`fedavg/`) as the
dense reference. Each point is the mean ± std over seeds of the final test accuracy and of the
mean accuracy over the last `--last` rounds, at the mean structured FLOPs per example (a fraction
of dense). Writes `pareto.json` and `pareto.png` (accuracy against structured FLOPs, error bars
over seeds) and prints the table. Rerunning resumes: finished points are read back.

  python -m experiments.pareto --config=experiments/configs/default.py --workdir=runs/pareto \
      --config.seeds=0,1,2 --tp=0.2,0.3,0.4
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging
import matplotlib
from ml_collections import config_flags

from autoflip_jax import config_checks, console, report, train

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one sub-workdir per Tp.')
_TP = flags.DEFINE_list('tp', ['0.2', '0.3', '0.4'], 'Tp values.')
_LAST = flags.DEFINE_integer('last', 10, 'Rounds at the end whose mean accuracy is reported.')
_REUSE = flags.DEFINE_string(
    'reuse', '', 'A finished workdir of the same config (e.g. experiments.compare with the same '
    'seeds) whose FedAvg and config.tp rows stand for the points it holds; checked field by '
    'field, `algorithm` and `target_accuracy` aside.')
flags.mark_flags_as_required(['config', 'workdir'])
ALGORITHMS = ('autoflip', 'random', 'magnitude')


def points(workdir: str, tp: float | None, last: int) -> list[dict]:
  """One point per algorithm of a finished sub-workdir: mean ± std over seeds."""
  return [dict(r, tp=tp) for r in report.seed_summary(workdir, last)]


def _same_config(workdir: str, config) -> bool:
  """Whether `workdir` ran `config` (every field but the algorithm list and compare's target)."""
  path = os.path.join(workdir, 'summary.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    saved = json.load(f)['config']
  mine = json.loads(json.dumps(config.to_dict(), default=str))
  drop = lambda d: {k: v for k, v in d.items() if k not in ('algorithm', 'target_accuracy')}
  return drop(saved) == drop(mine)


def plot(rows: list[dict], out_dir: str, last: int) -> str:
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, key, title in ((axes[0], 'final', 'final round'),
                         (axes[1], 'last', f'mean of the last {last} rounds')):
    for name in dict.fromkeys(r['algorithm'] for r in rows):
      pts = sorted((r for r in rows if r['algorithm'] == name), key=lambda r: r['flops_fraction'])
      ax.errorbar([r['flops_fraction'] for r in pts], [r[f'{key}_mean'] for r in pts],
                  yerr=[r[f'{key}_std'] for r in pts], fmt='o-' if len(pts) > 1 else 's',
                  capsize=3, label=name)
    ax.set_xlabel('structured FLOPs per example (fraction of dense)')
    ax.set_ylabel('test accuracy')
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  path = os.path.join(out_dir, 'pareto.png')
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  base = _CONFIG.value
  tps = [float(t) for t in _TP.value]
  configs = []
  for tp in tps:  # every point validated before any runs
    config = base.copy_and_resolve_references()
    config.algorithm = ','.join(ALGORITHMS)
    config.tp = tp
    config.control_structure = True
    config.control_sparsity = 0.0
    config_checks.validate_config(config)
    configs.append(config)
  reference = base.copy_and_resolve_references()
  reference.algorithm = 'fedavg'
  console.setup_console(_WORKDIR.value)
  reuse = None
  if _REUSE.value:
    if not _same_config(_REUSE.value, base):
      raise app.UsageError(f'--reuse={_REUSE.value} did not run this config (its summary.json '
                           f'differs in a field other than algorithm)')
    reuse = [r for r in points(_REUSE.value, base.tp, _LAST.value)
             if r['algorithm'] in ('fedavg',) + ALGORITHMS]
    logging.info('reusing %s from %s', [r['algorithm'] for r in reuse], _REUSE.value)
  rows = []
  if reuse and any(r['algorithm'] == 'fedavg' for r in reuse):
    rows += [dict(r, tp=None) for r in reuse if r['algorithm'] == 'fedavg']
  else:
    fedavg_dir = os.path.join(_WORKDIR.value, 'fedavg')
    train.train_and_evaluate(reference, fedavg_dir)
    rows += points(fedavg_dir, None, _LAST.value)
  for tp, config in zip(tps, configs):
    if reuse and tp == base.tp and {r['algorithm'] for r in reuse} >= set(ALGORITHMS):
      rows += [r for r in reuse if r['algorithm'] in ALGORITHMS]
      continue
    logging.info('Tp %g', tp)
    sub = os.path.join(_WORKDIR.value, f'tp{tp:g}')
    train.train_and_evaluate(config, sub)
    rows += points(sub, tp, _LAST.value)
  with open(os.path.join(_WORKDIR.value, 'pareto.json'), 'w') as f:
    json.dump(rows, f, indent=2)
  logging.info('wrote %s', plot(rows, _WORKDIR.value, _LAST.value))
  print(f"| algorithm | Tp | seeds | structured FLOPs | final acc | mean acc, last {_LAST.value} |")
  print('|---|---|---|---|---|---|')
  for r in rows:
    tp = '' if r['tp'] is None else f"{r['tp']:g}"
    print(f"| {r['algorithm']} | {tp} | {r['seeds']} | {r['flops_fraction']:.3f} | "
          f"{r['final_mean']:.4f} ± {r['final_std']:.4f} | "
          f"{r['last_mean']:.4f} ± {r['last_std']:.4f} |")


if __name__ == '__main__':
  app.run(main)
