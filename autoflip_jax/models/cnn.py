"""The paper's six-layer CNN (conv-pool-conv-pool-dense-dense).

This is the `TwoCNN` of the AutoFLIP reference code (inherited from McMahan et al. 2017's MNIST
CNN): two 5x5 convolutions with 32 and 64 filters (`padding=1`), each followed by ReLU and 2x2 max
pooling (`padding=1`, as PyTorch's `MaxPool2d(2, padding=1)`), a hidden dense layer and the
classifier. Counting the pooling layers, that is the six layers the paper names. Xavier (Glorot
uniform) initialisation, zero biases, as the reference code.

Convolutions are `layers.PatchConv` (image patches times a matmul; see `layers.py` for why),
whose maths is the same as `flax.linen.Conv`, which `tests/test_models.py` checks.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from autoflip_jax.models.layers import KeptUnits, PatchConv, im2col, max_pool_2x2, unit_width
from autoflip_jax.models.layers import xavier
from autoflip_jax.models.units import Unit

__all__ = ['CNN', 'PatchConv', 'im2col']


class CNN(nn.Module):
  """Six-layer CNN; works for any `[batch, H, W, C]` input large enough for two 5x5 convs."""
  num_classes: int
  channels: Sequence[int] = (32, 64)
  hidden: int = 512
  kept_units: KeptUnits = ()  # set by `shrink.shrink`: the units a shrunk model still has

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    x = x_bhwc
    for i, c in enumerate(self.channels):
      x = PatchConv(unit_width(self.kept_units, f'conv{i}', c), name=f'conv{i}')(x)
      x = nn.relu(x)
      x = max_pool_2x2(x, padding=1)
    x = x.reshape(x.shape[0], -1)  # HWC flatten: input feature i belongs to channel i % C.
    hidden = unit_width(self.kept_units, 'dense0', self.hidden)
    x = nn.relu(nn.Dense(hidden, kernel_init=xavier, name='dense0')(x))
    return nn.Dense(self.num_classes, kernel_init=xavier, name='head')(x)

  def units(self) -> tuple[Unit, ...]:
    """Structured units: conv filters and hidden neurons. The head's classes are never units."""
    n = len(self.channels)
    convs = tuple(
        Unit(f'conv{i}', (f'conv{i}', 'kernel'), ((f'conv{i}', 'bias'),),
             (((f'conv{i + 1}', 'kernel'), 2),) if i + 1 < n else ((('dense0', 'kernel'), 0),))
        for i in range(n))
    dense = Unit('dense0', ('dense0', 'kernel'), (('dense0', 'bias'),), ((('head', 'kernel'), 0),))
    return convs + (dense,)
