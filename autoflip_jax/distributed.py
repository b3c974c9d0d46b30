"""Multi-host runs: one JAX process per host (multi-controller JAX), joined by
`jax.distributed.initialize`.

Every process runs the same program with the same config and seed, so each builds the same
host arrays (federation, cohort, initial model). After `initialize`, `jax.devices()` lists the
devices of every process; `sharding.client_mesh(n)` spans them, `sharding.shard_clients`
gives each device its slice of the cohort and `sharding.replicate` puts the server model on
all of them, and the jitted round runs as one program over the whole mesh (XLA inserts the
cross-host sum of the client models).

How to start it:

* TPU pods, SLURM, Open MPI: `initialize()` with no arguments detects the coordinator, the
  number of processes and this process's id (`python -m experiments.main --distributed_auto`
  on every host).
* Anywhere else (several CPU processes on one machine, hand-started GPU hosts): pass the
  same `coordinator_address` (`host:port` of process 0) and `num_processes` to every process
  and a distinct `process_id` in `[0, num_processes)` (`--coordinator_address=host:port
  --num_processes=N --process_id=I`).

It must run before anything touches a JAX device. On CPU the cross-process collectives are
gloo over TCP (`jax_cpu_collectives_implementation`, gloo by default in jax 0.10; set back to
gloo here if something switched it off).
"""

from __future__ import annotations

import jax


def validate(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """Raises ValueError with the reason when the three settings cannot start a run."""
  if num_processes < 1:
    raise ValueError(f'num_processes must be at least 1, got {num_processes}')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id must be in [0, num_processes={num_processes}), '
                     f'got {process_id}')
  if num_processes > 1 and not coordinator_address:
    raise ValueError(f'num_processes={num_processes} needs a coordinator_address '
                     '(host:port of process 0), or use auto-detection on TPU pods / SLURM')
  if coordinator_address:
    host, sep, port = coordinator_address.rpartition(':')
    if not sep or not host or not port.isdigit():
      raise ValueError(f'coordinator_address must be host:port, got {coordinator_address!r}')


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs) -> None:
  """Joins this process to a multi-process JAX run; all None: auto-detect (TPU pod, SLURM).

  `kwargs` go to `jax.distributed.initialize` (e.g. `initialization_timeout` in seconds).
  """
  if coordinator_address is not None or num_processes is not None or process_id is not None:
    validate(coordinator_address or '', 1 if num_processes is None else num_processes,
             0 if process_id is None else process_id)
  if jax.config.jax_cpu_collectives_implementation is None:
    # Without collectives a CPU computation cannot span processes. Only the CPU client reads
    # this; an explicit choice (mpi) is kept.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
