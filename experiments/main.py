"""Runs an experiment: `python -m experiments.main --config=CONFIG.py --workdir=DIR`.

Every config field can be overridden on the command line, e.g. `--config.tp=0.4`.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from autoflip_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for metrics, summary and plots.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.info('config:\n%s', _CONFIG.value)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
