"""Sweeps Tp, Eexp and the explorer fraction; each point in its own sub-workdir, then plots.

  python -m experiments.sweep --config=experiments/configs/default.py --workdir=runs/sweep \
      --tp=0.1,0.2,0.3,0.4,0.5 --e_exp=5 --c_exp=1.0 --config.num_rounds=20

FedAvg runs once as the reference (`<workdir>/fedavg`). Rerunning the same command resumes: finished
points are read back, an interrupted one continues from its checkpoint.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from autoflip_jax import sweeps
from autoflip_jax import config_checks, console, train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one sub-workdir per point.')
_TP = flags.DEFINE_list('tp', ['0.1', '0.2', '0.3', '0.4', '0.5'], 'Tp values.')
_E_EXP = flags.DEFINE_list('e_exp', None, 'Exploration epochs (default: the config\'s).')
_C_EXP = flags.DEFINE_list('c_exp', None, 'Explorer fractions (default: the config\'s).')
_REFERENCE = flags.DEFINE_bool('reference', True, 'Also run FedAvg once as the reference.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  base = _CONFIG.value
  points = sweeps.grid([float(t) for t in _TP.value],
                       [int(e) for e in (_E_EXP.value or [base.e_exp])],
                       [float(c) for c in (_C_EXP.value or [base.c_exp])])
  configs = []
  for point in points:  # validate every point before running any
    config = base.copy_and_resolve_references()
    config.algorithm = 'autoflip'
    for key, value in point.items():
      config[key] = value
    config_checks.validate_config(config)
    configs.append(config)
  console.setup_console(_WORKDIR.value)  # libraries' INFO lines: log.txt, or --verbosity=1
  reference = None
  if _REFERENCE.value:
    config = base.copy_and_resolve_references()
    config.algorithm = 'fedavg'
    reference = train.train_and_evaluate(config, os.path.join(_WORKDIR.value, 'fedavg'))[0]
  for point, config in zip(points, configs):
    logging.info('sweep point %s', sweeps.point_name(point))
    train.train_and_evaluate(config, os.path.join(_WORKDIR.value, sweeps.point_name(point)))
  rows = sweeps.collect(_WORKDIR.value, points)
  with open(os.path.join(_WORKDIR.value, 'sweep.json'), 'w') as f:
    json.dump({'reference': reference, 'points': rows}, f, indent=2)
  for path in sweeps.plot(rows, _WORKDIR.value,
                          reference['test_accuracy'] if reference else None):
    logging.info('wrote %s', path)
  header = f"{'point':32s} {'accuracy':>9s} {'compression':>12s} {'sparsity':>9s}"
  print(header)
  for r in rows:
    print(f"{sweeps.point_name(r):32s} {r['test_accuracy']:9.4f} {r['compression']:11.2f}x "
          f"{r['sparsity']:9.3f}")


if __name__ == '__main__':
  app.run(main)
