"""Dotted-path config overrides shared by the experiment scripts (`robustness`, `ablation`)."""

from __future__ import annotations

from typing import Any


def parse(text: str, like: Any) -> Any:
  """`text` as the type of the field's current value `like` (bool: true/false/1/0)."""
  if isinstance(like, bool):
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'{text!r} is not a boolean (true/false)')
    return text.lower() in ('true', '1')
  if isinstance(like, int):
    return int(text)
  if isinstance(like, float):
    return float(text)
  return text


def apply(base, overrides: dict[str, Any]):
  """A copy of `base` with `overrides` ({'dp.clip': 1.0, 'tp': '0.4'}) set; a string value is
  parsed as the field's type. An unknown field is a KeyError that names it."""
  config = base.copy_and_resolve_references()
  with config.unlocked():
    for key, value in overrides.items():
      *parents, leaf = key.split('.')
      target = config
      for p in parents:
        if p not in target:
          raise KeyError(f'config.{key}: config has no field {p!r}')
        target = target[p]
      if leaf not in target:
        raise KeyError(f'config.{key}: config has no field {leaf!r}')
      if isinstance(value, str):
        value = parse(value, target[leaf])
      target[leaf] = value
  return config
