"""Validation of the whole config before any data is read or anything compiles.

Each message names the config field, its value and the allowed range, so a flag typo such as
`--config.tp=3` fails in milliseconds with a sentence instead of after a compile or, worse,
running something else than asked.
"""

from __future__ import annotations

from autoflip_jax import algorithms, federated, local, masks, models, server
from autoflip_jax import data as data_lib
from autoflip_jax.fields import check_buckets
from autoflip_jax.fields import check_choice as _choice
from autoflip_jax.fields import check_float as _float
from autoflip_jax.fields import check_int as _int

ON_DIVERGENCE = ('stop', 'record')  # config.on_divergence


def tp_sweep_values(config) -> tuple[float, ...]:
  """The thresholds of `config.tp_sweep` ('0.1,0.2,0.3' -> (0.1, 0.2, 0.3)); () when it is off.

  Raises ValueError naming the field for anything but distinct numbers in [0, 1).
  """
  value = config.tp_sweep
  if not isinstance(value, str):
    raise ValueError(f'config.tp_sweep={value!r} must be a string of comma-separated thresholds, '
                     f"e.g. '0.1,0.2,0.3' ('' = no sweep)")
  if not value.strip():
    return ()
  tps = []
  for item in value.split(','):
    try:
      tp = float(item)
    except ValueError:
      tp = None
    if tp is None or not 0.0 <= tp < 1.0:  # also rejects nan
      raise ValueError(f'config.tp_sweep={value!r}: {item.strip()!r} is not a number in [0.0, '
                       f'1.0); give comma-separated thresholds, e.g. \'0.1,0.2,0.3\'')
    tps.append(tp)
  duplicates = sorted({t for t in tps if tps.count(t) > 1})
  if duplicates:
    raise ValueError(f'config.tp_sweep={value!r} repeats the threshold(s) '
                     f'{", ".join(f"{t:g}" for t in duplicates)}: give each once')
  return tuple(tps)


def seed_values(config) -> tuple[int, ...]:
  """The training seeds: `config.seeds` ('0,1,2' -> (0, 1, 2)), or (config.seed,) when empty.

  Raises ValueError naming the field for anything but distinct integers >= 0.
  """
  value = config.seeds
  if not isinstance(value, str):
    raise ValueError(f'config.seeds={value!r} must be a string of comma-separated seeds, e.g. '
                     f"'0,1,2' ('' = config.seed alone)")
  if not value.strip():
    return (config.seed,)
  seeds = []
  for item in value.split(','):
    item = item.strip()
    if not item.isdigit():
      raise ValueError(f'config.seeds={value!r}: {item!r} is not an integer >= 0; give '
                       f"comma-separated seeds, e.g. '0,1,2'")
    seeds.append(int(item))
  duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
  if duplicates:
    raise ValueError(f'config.seeds={value!r} repeats the seed(s) '
                     f'{", ".join(map(str, duplicates))}: give each once')
  return tuple(seeds)


def validate_config(config) -> None:
  """Checks every field; raises ValueError naming the first bad one."""
  names = algorithms.parse(config.algorithm)
  models.validate(config)
  _int(config, 'num_clients', 1)
  data_lib.validate(config.data, config.num_clients)
  _int(config, 'clients_per_round', 1, config.num_clients)
  _int(config, 'num_rounds', 1)
  _int(config, 'local_epochs', 1)
  _int(config, 'batch_size', 1)
  _int(config, 'max_local_steps', 0)
  _choice(config, 'pad_steps', ('cohort', 'largest'))
  if not isinstance(config.memory_check, bool):
    raise ValueError(f'config.memory_check={config.memory_check!r} must be True or False')
  _float(config, 'learning_rate', 0.0, float('inf'), True, True)
  _float(config, 'lr_decay', 0.0, 1.0, True, False)
  _choice(config, 'optimizer', local.OPTIMIZERS)
  _choice(config, 'server_optimizer', server.OPTIMIZERS)
  _float(config, 'server_learning_rate', 0.0, float('inf'), True, True)
  _float(config, 'server_momentum', 0.0, 1.0, False, True)
  _float(config, 'server_b1', 0.0, 1.0, False, True)
  _float(config, 'server_b2', 0.0, 1.0, False, True)
  _float(config, 'server_eps', 0.0, float('inf'), True, True)
  _int(config, 'warmup_epochs', 0)
  _choice(config, 'sparse_init', masks.SPARSE_INITS)
  _choice(config, 'on_divergence', ON_DIVERGENCE)
  _float(config, 'dp.clip', 0.0, float('inf'), False, True)
  _float(config, 'dp.noise_multiplier', 0.0, float('inf'), False, True)
  _float(config, 'dp.delta', 0.0, 1.0, True, True)
  if config.dp.noise_multiplier > 0 and config.dp.clip <= 0:
    raise ValueError(f'config.dp.noise_multiplier={config.dp.noise_multiplier!r} needs '
                     f'config.dp.clip > 0 (got {config.dp.clip!r}): the noise is calibrated to '
                     f'the clip, the sensitivity of the summed client updates')
  _choice(config, 'update_aggregation', federated.AGGREGATIONS)
  _float(config, 'update_trim', 0.0, 0.5, False, True)
  if config.update_aggregation != 'mean' and config.dp.clip > 0:
    raise ValueError(f'config.update_aggregation={config.update_aggregation!r} cannot be '
                     f'combined with DP-FedAvg (config.dp.clip={config.dp.clip!r}): its noise is '
                     f"calibrated to the sum of the clipped updates; use 'mean' or dp.clip=0")
  _int(config, 'update_bucket', 1, config.clients_per_round)
  groups = federated.num_buckets(config.clients_per_round, config.update_bucket)
  check_buckets(config, 'update', config.clients_per_round,
                f'config.clients_per_round={config.clients_per_round}', groups,
                federated.trim_count(config.update_trim, groups))
  if (config.update_aggregation == 'trimmed_mean'
      and federated.trim_count(config.update_trim, config.clients_per_round) == 0):
    raise ValueError(f'config.update_trim={config.update_trim!r} cuts nothing of a cohort of '
                     f'config.clients_per_round={config.clients_per_round}: the trimmed mean '
                     f'would be the plain mean; use update_trim >= '
                     f'{1 / config.clients_per_round:.3g}')
  _float(config, 'attack.update_fraction', 0.0, 1.0, False, True)
  _float(config, 'attack.update_factor', -float('inf'), float('inf'), True, True)
  algorithms.validate(config, names)  # each algorithm's own fields (its module's check_config)
  _int(config, 'seed', 0)
  seed_values(config)
  _int(config, 'eval_every', 1)
  _int(config, 'eval_batch_size', 1)
  _int(config, 'checkpoint_every', 1)
  _int(config, 'clients_per_chunk', 0, config.clients_per_round)
  _int(config, 'mesh_devices', 1)
  if not isinstance(config.shrunk_rounds, bool):
    raise ValueError(f'config.shrunk_rounds={config.shrunk_rounds!r} must be True or False')
  for field in ('clients_per_round', 'clients_per_chunk'):
    if config[field] % config.mesh_devices:
      raise ValueError(f'config.{field}={config[field]} must be a multiple of '
                       f'config.mesh_devices={config.mesh_devices}: the cohort is split evenly '
                       f'over the devices')
  if config.clients_per_chunk and config.clients_per_round % config.clients_per_chunk:
    raise ValueError(f'config.clients_per_chunk={config.clients_per_chunk} must divide '
                     f'config.clients_per_round={config.clients_per_round} (0: the whole cohort)')
  if 'target_accuracy' in config:  # experiments/configs/compare.py
    _float(config, 'target_accuracy', 0.0, 1.0, False, False)
  if tp_sweep_values(config):
    if 'autoflip' not in names:
      raise ValueError(f'config.tp_sweep={config.tp_sweep!r} sweeps AutoFLIP\'s threshold but '
                       f'config.algorithm={config.algorithm!r} has no autoflip: add it')
    if config.guidance_per_round:
      raise ValueError(f'config.tp_sweep={config.tp_sweep!r} cannot be combined with '
                       f'config.guidance_per_round=True (the sweep builds each mask once, before '
                       f'round 1): set one of them off')
