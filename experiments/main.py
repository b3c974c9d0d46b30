"""Runs an experiment: `python -m experiments.main --config=CONFIG.py --workdir=DIR`.

Every config field can be overridden on the command line, e.g. `--config.tp=0.4`.

The console shows our own lines (one progress line per round) and every warning;
`--verbosity=1` adds the libraries' INFO lines (orbax, JAX). `<workdir>/log.txt` always holds
all of them (`autoflip_jax/console.py`).

Multi-host (one process per host, every process running this same command; see
`autoflip_jax/distributed.py`): `--distributed_auto` on TPU pods / SLURM / Open MPI, otherwise
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` with I = 0..N-1, and
`--config.mesh_devices` up to the devices of all processes together. Give every process the same
`--workdir` (a shared filesystem across hosts): process 0 alone writes the metrics, summary,
plots and progress, every process saves and restores the orbax checkpoints together, and a rerun
of the same commands resumes. tests/test_distributed.py runs a whole two-process run on one
machine and checks it against one process.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from autoflip_jax import console
from autoflip_jax import distributed
from autoflip_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for metrics, summary and plots.')
flags.mark_flags_as_required(['config', 'workdir'])
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'Multi-process runs: host:port of process 0, the same for all.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 1, 'Multi-process runs: how many.')
_PROCESS_ID = flags.DEFINE_integer('process_id', 0, 'Multi-process runs: this one, 0..N-1.')
_DISTRIBUTED_AUTO = flags.DEFINE_bool(
    'distributed_auto', False, 'Multi-process runs on TPU pods / SLURM / Open MPI: detect '
    'the coordinator, process count and id (jax.distributed.initialize() with no arguments).')


def _start_distributed() -> None:
  """Joins the multi-process run the flags describe, if any; before JAX touches a device."""
  manual = (_COORDINATOR.value or _NUM_PROCESSES.value != 1 or _PROCESS_ID.value != 0)
  if _DISTRIBUTED_AUTO.value:
    if manual:
      raise app.UsageError('--distributed_auto detects the processes itself: drop '
                           '--coordinator_address, --num_processes and --process_id')
    distributed.initialize()
  elif manual:
    try:
      distributed.validate(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
      raise app.UsageError(f'--{e}') from None
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _start_distributed()
  console.setup_console(_WORKDIR.value)  # after joining: only process 0 writes log.txt
  logging.info('config:\n%s', _CONFIG.value)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
