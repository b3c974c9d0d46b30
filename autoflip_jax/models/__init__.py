"""Model registry: `config.model` names a Flax module that also declares its structured units."""

from __future__ import annotations

import flax.linen as nn

from autoflip_jax.models.cnn import CNN
from autoflip_jax.models.units import Unit, get_path

MODELS = ('cnn',)


def validate(config) -> None:
  if config.model not in MODELS:
    raise ValueError(f'config.model={config.model!r} is not one of {MODELS}')


def get_model(config, num_classes: int) -> nn.Module:
  """Builds `config.model` for `num_classes` outputs, sized by `config.model_config`."""
  validate(config)
  mc = config.get('model_config', {}) if hasattr(config, 'get') else {}
  if config.model == 'cnn':
    return CNN(num_classes=num_classes, channels=tuple(mc.get('channels', (32, 64))),
               hidden=int(mc.get('hidden', 512)))
  raise AssertionError(config.model)


__all__ = ['MODELS', 'Unit', 'get_model', 'get_path', 'validate']
