"""Validation of the whole config before any data is read or anything compiles.

Each message names the config field, its value and the allowed range, so a flag typo such as
`--config.tp=3` fails in milliseconds with a sentence instead of after a compile or, worse,
running something else than asked.
"""

from __future__ import annotations

import numbers

import jax

from autoflip_jax import algorithms, models
from autoflip_jax import data as data_lib


def _int(config, field: str, low: int, high: int | None = None) -> None:
  value = config[field]
  ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  ok = ok and value >= low and (high is None or value <= high)
  if not ok:
    bound = f'an integer >= {low}' if high is None else f'an integer in [{low}, {high}]'
    raise ValueError(f'config.{field}={value!r} must be {bound}')


def _float(config, field: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
  value = config[field]
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if ok:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else
                                                           value <= high)
  if not ok:
    interval = ('(' if low_open else '[') + f'{low}, {high}' + (')' if high_open else ']')
    raise ValueError(f'config.{field}={value!r} must be a number in {interval}')


def _choice(config, field: str, choices: tuple[str, ...]) -> None:
  if config[field] not in choices:
    raise ValueError(f'config.{field}={config[field]!r} is not one of {choices}')


def tp_sweep_values(config) -> tuple[float, ...]:
  """The thresholds of `config.tp_sweep` ('0.1,0.2,0.3' -> (0.1, 0.2, 0.3)); () when it is off.

  Raises ValueError naming the field for anything but distinct numbers in [0, 1).
  """
  value = config.get('tp_sweep', '')
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
  _float(config, 'learning_rate', 0.0, float('inf'), True, True)
  _float(config, 'lr_decay', 0.0, 1.0, True, False)
  _choice(config, 'optimizer', ('adam', 'sgd'))
  _float(config, 'tp', 0.0, 1.0, False, True)
  _int(config, 'e_exp', 0)
  _float(config, 'c_exp', 0.0, 1.0, True, False)
  _int(config, 'patience', 0)
  _choice(config, 'guidance_normalization', ('minmax', 'robust'))
  _float(config, 'structured_threshold', 0.0, 1.0, True, False)
  _float(config, 'structured_tp', 0.0, 1.0, False, True)
  _int(config, 'seed', 0)
  _int(config, 'eval_every', 1)
  _int(config, 'eval_batch_size', 1)
  _int(config, 'checkpoint_every', 1)
  _int(config, 'clients_per_chunk', 0, config.clients_per_round)
  _int(config, 'mesh_devices', 1)
  for field in ('clients_per_round', 'clients_per_chunk'):
    if config[field] % config.mesh_devices:
      raise ValueError(f'config.{field}={config[field]} must be a multiple of '
                       f'config.mesh_devices={config.mesh_devices}: the cohort is split evenly '
                       f'over the devices')
  if config.clients_per_chunk and config.clients_per_round % config.clients_per_chunk:
    raise ValueError(f'config.clients_per_chunk={config.clients_per_chunk} must divide '
                     f'config.clients_per_round={config.clients_per_round} (0: the whole cohort)')
  _float(config, 'control_sparsity', 0.0, 1.0, False, True)
  _int(config, 'prunefl_interval', 1)
  _int(config, 'prunefl_init_examples', 1)
  _int(config, 'prunefl_init_steps', 0)
  _float(config, 'eflprune_rate', 0.0, 1.0, False, True)
  _int(config, 'eflprune_interval', 1)
  _int(config, 'eflprune_steps', 1)
  if 'target_accuracy' in config:  # experiments/configs/compare.py
    _float(config, 'target_accuracy', 0.0, 1.0, False, False)
  controls = [n for n in names if n in ('random', 'magnitude')]
  if (controls and config.control_sparsity == 0 and 'autoflip' not in names
      and config.e_exp < 1):
    raise ValueError(f'config.e_exp=0 with algorithm {controls[0]} and control_sparsity=0: its '
                     f'sparsity is AutoFLIP\'s, whose exploration needs at least one epoch (or '
                     f'set config.control_sparsity)')
  if 'autoflip' in names and config.e_exp < 1:
    raise ValueError('config.e_exp=0 with algorithm autoflip: exploration needs at least one '
                     'epoch (with none, every guidance value is 0, all tie at the threshold and '
                     'the tie rule prunes every weight)')
  if tp_sweep_values(config):
    if 'autoflip' not in names:
      raise ValueError(f'config.tp_sweep={config.tp_sweep!r} sweeps AutoFLIP\'s threshold but '
                       f'config.algorithm={config.algorithm!r} has no autoflip: add it')
    if config.guidance_per_round:
      raise ValueError(f'config.tp_sweep={config.tp_sweep!r} cannot be combined with '
                       f'config.guidance_per_round=True (the sweep builds each mask once, before '
                       f'round 1): set one of them off')
  if config.guidance_per_round and config.c_exp != 1.0:
    raise ValueError(f'config.guidance_per_round=True needs config.c_exp=1.0 (every client must '
                     f'have explored), got c_exp={config.c_exp}')


def validate_fit(config, dataset) -> None:
  """Checks that need the data's shape but no compile: the model must accept the input."""
  model = models.get_model(config, dataset.num_classes)
  x = jax.ShapeDtypeStruct((1,) + dataset.input_shape, dataset.test_x.dtype)
  try:
    jax.eval_shape(model.init, jax.random.key(0), x)
  except Exception as e:  # noqa: BLE001 -- re-raised with the config named
    raise ValueError(f'config.model={config.model!r} does not accept {dataset.name} inputs of '
                     f'shape {dataset.input_shape}: {e}') from e
