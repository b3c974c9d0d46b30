"""An ablation: rows of config overrides on one base config, each run on the config's seeds.

Every `--row=NAME:key=value;key=value` runs the base config (`--config`, with its own flags) with
those overrides in the sub-workdir NAME (`algorithm=fedavg,autoflip` runs both side by side, from
the same θ0). For every (row, algorithm): the test accuracy averaged over the last `--last`
rounds and then over seeds (mean ± std over seeds), the final round's accuracy, compression and
the median seconds of a round per seed. Writes `ablation.json` and `ablation.md` and prints the
table; rerunning resumes (finished rows are read back from their workdirs).

The default rows are the study of issue 13 on the reference code's MNIST protocol
(`experiments/configs/mnist_paper.py`, with `--config.num_rounds=50 --config.e_exp=30
--config.seeds=0,1,2`): our FedAvg and AutoFLIP with a fixed mask, AutoFLIP with per-round
guidance, then the reference code's server momentum (FedAvgM 0.9) and its one-epoch warm-up of
θ0 (AUTOFLIP.md §7), for both algorithms. docs/reference_protocol.md holds the results.

  python -m experiments.ablation --config=experiments/configs/mnist_paper.py \\
      --workdir=runs/ablation --config.num_rounds=50 --config.e_exp=30 --config.seeds=0,1,2
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from autoflip_jax import config_checks, console, report, train
from experiments import overrides as overrides_lib

DEFAULT_ROWS = (
    'base:algorithm=fedavg,autoflip;guidance_per_round=false',
    'per_round_guidance:algorithm=autoflip;guidance_per_round=true',
    'momentum:algorithm=fedavg,autoflip;guidance_per_round=false;server_optimizer=momentum',
    'momentum_warmup:algorithm=fedavg,autoflip;guidance_per_round=false;'
    'server_optimizer=momentum;warmup_epochs=1',
)

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one sub-workdir per row.')
_ROWS = flags.DEFINE_multi_string('row', list(DEFAULT_ROWS),
                                  'NAME:key=value;key=value (dotted keys for nested fields).')
_LAST = flags.DEFINE_integer('last', 10, 'Rounds at the end whose mean accuracy is reported.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_row(spec: str) -> tuple[str, dict[str, str]]:
  """'NAME:key=value;key=value' -> (NAME, {key: value}); a malformed spec is a ValueError."""
  name, sep, rest = spec.partition(':')
  if not sep or not name.strip() or '/' in name:
    raise ValueError(f'--row={spec!r}: expected NAME:key=value;key=value')
  overrides = {}
  for item in filter(None, (i.strip() for i in rest.split(';'))):
    key, eq, value = item.partition('=')
    if not eq or not key.strip():
      raise ValueError(f'--row={spec!r}: {item!r} is not key=value')
    overrides[key.strip()] = value.strip()
  return name.strip(), overrides


def summarize(workdir: str, name: str, overrides: dict, last: int) -> list[dict]:
  """One row per algorithm of a finished sub-workdir (`report.seed_summary`)."""
  return [dict(r, row=name, overrides=overrides) for r in report.seed_summary(workdir, last)]


def table(rows: list[dict], last: int) -> str:
  lines = [f'| row | algorithm | seeds | acc, mean of last {last} rounds | final acc | '
           'compression | structured FLOPs | s/round |', '|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['row']} | {r['algorithm']} | {r['seeds']} | "
                 f"{r['last_mean']:.4f} ± {r['last_std']:.4f} | "
                 f"{r['final_mean']:.4f} ± {r['final_std']:.4f} | {r['compression']:.2f}x | "
                 f"{r['flops_fraction']:.3f} | {r['round_seconds']:.2f} |")
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  base = _CONFIG.value
  specs = [parse_row(s) for s in _ROWS.value]
  names = [n for n, _ in specs]
  if len(set(names)) != len(names):
    raise app.UsageError(f'--row names repeat: {names}')
  configs = []
  for name, overrides in specs:
    try:
      config = overrides_lib.apply(base, overrides)
      config_checks.validate_config(config)
    except (KeyError, ValueError) as e:
      raise app.UsageError(f'--row {name}: {e}') from e
    configs.append(config)
  console.setup_console(_WORKDIR.value)
  rows = []
  for (name, overrides), config in zip(specs, configs):
    logging.info('row %s: %s', name, overrides)
    sub = os.path.join(_WORKDIR.value, name)
    train.train_and_evaluate(config, sub)
    rows += summarize(sub, name, overrides, _LAST.value)
  with open(os.path.join(_WORKDIR.value, 'ablation.json'), 'w') as f:
    json.dump(rows, f, indent=2)
  text = table(rows, _LAST.value)
  with open(os.path.join(_WORKDIR.value, 'ablation.md'), 'w') as f:
    f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  app.run(main)
