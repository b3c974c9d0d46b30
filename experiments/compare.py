"""The comparison: `python -m experiments.compare --config=CONFIG.py --workdir=DIR`.

Runs every algorithm of `config.algorithm` with `train.train_and_evaluate` (so `metrics.jsonl`,
`summary.json` and resuming are those of the main job), then writes `comparison.md` and
`comparison.json` (per algorithm: final accuracy, compression, FLOPs per example, bytes up and
down to reach `config.target_accuracy` and in total) and the plots `accuracy_vs_round.png`,
`accuracy_vs_bytes.png` and `accuracy_vs_compression.png`. See docs/baselines.md.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from autoflip_jax import console, report, train

_CONFIG = config_flags.DEFINE_config_file('config', 'experiments/configs/compare.py',
                                          'Comparison config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for metrics, tables and plots.')
flags.mark_flags_as_required(['workdir'])


def run(config, workdir: str) -> list[str]:
  """Trains every algorithm, then writes the comparison; returns the paths written."""
  if 'target_accuracy' not in config:
    raise ValueError('config.target_accuracy is missing: use experiments/configs/compare.py or a '
                     'config with that field')
  summaries = train.train_and_evaluate(config, workdir)
  paths = report.write_comparison(workdir, summaries, config.target_accuracy)
  with open(paths[0]) as f:
    print(f.read())
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  console.setup_console(_WORKDIR.value)  # libraries' INFO lines: log.txt, or --verbosity=1
  logging.info('config:\n%s', _CONFIG.value)
  for path in run(_CONFIG.value, _WORKDIR.value):
    logging.info('wrote %s', path)


if __name__ == '__main__':
  app.run(main)
