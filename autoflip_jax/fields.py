"""Checks of one config field each, with a message that names the field, its value and the
allowed range (`config_checks` and every algorithm's `check_config` use them)."""

from __future__ import annotations

import numbers


def check_int(config, field: str, low: int, high: int | None = None) -> None:
  value = config[field]
  ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
  ok = ok and value >= low and (high is None or value <= high)
  if not ok:
    bound = f'an integer >= {low}' if high is None else f'an integer in [{low}, {high}]'
    raise ValueError(f'config.{field}={value!r} must be {bound}')


def check_float(config, field: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
  value = config[field]
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if ok:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else
                                                           value <= high)
  if not ok:
    interval = ('(' if low_open else '[') + f'{low}, {high}' + (')' if high_open else ']')
    raise ValueError(f'config.{field}={value!r} must be a number in {interval}')


def check_choice(config, field: str, choices: tuple[str, ...]) -> None:
  if config[field] not in choices:
    raise ValueError(f'config.{field}={config[field]!r} is not one of {choices}')
