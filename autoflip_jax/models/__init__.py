"""Model registry: `config.model` names a Flax module that also declares its structured units.

  cnn              the paper's six-layer CNN (MNIST, FEMNIST)           models/cnn.py
  resnet18         CIFAR ResNet-18 with GroupNorm (CIFAR-10/100)          models/resnet.py
  efficientnet_b3  EfficientNet-B3 with GroupNorm (CIFAR-100)             models/efficientnet.py
  lstm             LEAF's Shakespeare next-character LSTM                 models/lstm.py

Sizes come from `config.model_config` (a ConfigDict or dict); every field has the paper's value
as default, so `model_config` only names what a config changes:
  cnn:             channels (32, 64), hidden 512
  resnet18:        width 64, norm_groups 2, norm_statistics 'live'
  efficientnet_b3: width_mult 1.2, depth_mult 1.4, norm_groups 2, norm_statistics 'live'
(`norm_statistics`: what a structurally removed channel counts for in its GroupNorm: 'live',
the group's statistics over its live channels, or 'zeros', the removed channels counted as the
zeros they are in the masked model, the rule before; `layers.GroupNorm`, docs/structured.md.)
  lstm:            embed 8, hidden (256, 256), vocab_size = num_classes
Every image model takes any `[batch, H, W, C]` input; the LSTM takes token ids `[batch, time]`.
"""

from __future__ import annotations

import flax.linen as nn

from autoflip_jax.models.cnn import CNN
from autoflip_jax.models.efficientnet import EfficientNet
from autoflip_jax.models.layers import NORM_STATISTICS
from autoflip_jax.models.lstm import LSTM
from autoflip_jax.models.resnet import ResNet18
from autoflip_jax.models.units import Unit, get_path

MODELS = ('cnn', 'resnet18', 'efficientnet_b3', 'lstm')
# Models whose clients train faster vmapped than one at a time on a CPU (`federated.resolve_chunk`):
# the LSTM's step is 80 small sequential matmuls, which a vmap over clients makes larger
# (measured with benchmarks/round_throughput.py; the convolutional models are the other way).
VMAP_CLIENTS_ON_CPU = ('lstm',)


def _model_config(config):
  """`config.model_config`, or {} when the config has none (every field then has its default)."""
  mc = config.get('model_config', None) if hasattr(config, 'get') else None
  return mc if mc is not None else {}


def validate(config) -> None:
  if config.model not in MODELS:
    raise ValueError(f'config.model={config.model!r} is not one of {MODELS}')
  mc = _model_config(config)
  statistics = mc.get('norm_statistics', 'live')
  if statistics not in NORM_STATISTICS:
    raise ValueError(f'config.model_config.norm_statistics={statistics!r} is not one of '
                     f'{NORM_STATISTICS}')
  if 'norm_statistics' in mc and config.model not in ('resnet18', 'efficientnet_b3'):
    raise ValueError(f'config.model_config.norm_statistics is for the GroupNorm models '
                     f'(resnet18, efficientnet_b3), not config.model={config.model!r}')


def get_model(config, num_classes: int) -> nn.Module:
  """Builds `config.model` for `num_classes` outputs, sized by `config.model_config`."""
  validate(config)
  mc = _model_config(config)
  if config.model == 'cnn':
    return CNN(num_classes=num_classes, channels=tuple(mc.get('channels', (32, 64))),
               hidden=int(mc.get('hidden', 512)))
  if config.model == 'resnet18':
    return ResNet18(num_classes=num_classes, width=int(mc.get('width', 64)),
                    norm_groups=int(mc.get('norm_groups', 2)),
                    norm_statistics=str(mc.get('norm_statistics', 'live')))
  if config.model == 'efficientnet_b3':
    return EfficientNet(num_classes=num_classes, width_mult=float(mc.get('width_mult', 1.2)),
                        depth_mult=float(mc.get('depth_mult', 1.4)),
                        norm_groups=int(mc.get('norm_groups', 2)),
                        norm_statistics=str(mc.get('norm_statistics', 'live')))
  if config.model == 'lstm':
    return LSTM(num_classes=num_classes, vocab_size=int(mc.get('vocab_size', num_classes)),
                embed=int(mc.get('embed', 8)), hidden=tuple(mc.get('hidden', (256, 256))))
  raise AssertionError(config.model)


__all__ = ['MODELS', 'VMAP_CLIENTS_ON_CPU', 'Unit', 'get_model', 'get_path', 'validate']
