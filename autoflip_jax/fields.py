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


def check_buckets(config, prefix: str, rows: int, name: str, groups: int, cuts: int) -> None:
  """`<prefix>_bucket` above 1 (bucketing before a robust aggregation, `federated.bucket_means`):
  only with `<prefix>_aggregation` median or trimmed_mean, leaving at least 3 buckets of the
  `rows` (`name`: what they are, for the message), and for the trimmed mean cutting at least one
  bucket.
  `groups`: the bucket count; `cuts`: the trimmed mean's cut at each end of it (the caller
  computes both, `federated.num_buckets` and `federated.trim_count`)."""
  size, aggregation = config[f'{prefix}_bucket'], config[f'{prefix}_aggregation']
  if size == 1:
    return
  if aggregation not in ('median', 'trimmed_mean'):
    raise ValueError(f'config.{prefix}_bucket={size!r} with config.{prefix}_aggregation='
                     f"{aggregation!r}: bucketing feeds 'median' or 'trimmed_mean' (the mean of "
                     f'bucket means is the mean); set {prefix}_bucket=1')
  if groups < 3:
    raise ValueError(f'config.{prefix}_bucket={size!r} leaves {groups} bucket(s) of {name}: a '
                     f'median or trimmed mean of fewer than 3 buckets is their mean; use '
                     f'{prefix}_bucket <= {max(1, rows // 3)}')
  if aggregation == 'trimmed_mean' and cuts == 0:
    raise ValueError(f'config.{prefix}_trim={config[f"{prefix}_trim"]!r} cuts nothing of the '
                     f'{groups} buckets of config.{prefix}_bucket={size!r}: the trimmed mean '
                     f'would be their mean; use {prefix}_trim >= {1 / groups:.3g}')
