"""The paper's six-layer CNN (conv-pool-conv-pool-dense-dense).

This is the `TwoCNN` of the AutoFLIP reference code (inherited from McMahan et al. 2017's MNIST
CNN): two 5x5 convolutions with 32 and 64 filters (`padding=1`), each followed by ReLU and 2x2 max
pooling (`padding=1`, as PyTorch's `MaxPool2d(2, padding=1)`), a hidden dense layer and the
classifier. Counting the pooling layers, that is the six layers the paper names. Xavier (Glorot
uniform) initialisation, zero biases, as the reference code.

Convolutions are written as image patches times a matmul (`PatchConv`). On XLA:CPU this keeps the
federated round fast: a `lax.conv` inside `lax.scan` and `vmap`ped over clients becomes a grouped
convolution that runs several times slower, while a patches-matmul vmaps into a plain batched
matmul (jax-ml/jax#12868 and our measurements in the core issue). The maths is the same as
`flax.linen.Conv`, which `tests/test_models.py` checks.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoflip_jax.models.units import Unit

_init = nn.initializers.xavier_uniform()


def im2col(x_bhwc: jax.Array, kh: int, kw: int, padding: int) -> jax.Array:
  """Stride-1 patches `[b, h', w', kh * kw * c]`, feature index `(i * kw + j) * c + ch`.

  Built from shifted slices rather than `lax.conv_general_dilated_patches`: the slices'
  gradient is a sum of padded copies, while the patches primitive's gradient is a convolution
  with a one-hot kernel that costs several times the layer's own FLOPs.
  """
  p = padding
  x = jnp.pad(x_bhwc, ((0, 0), (p, p), (p, p), (0, 0)))
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  return jnp.concatenate(
      [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)


class PatchConv(nn.Module):
  """2-D convolution, stride 1, as image patches (`im2col`) times a kernel matmul.

  The kernel is stored as `[kh, kw, in, out]` like `flax.linen.Conv`, so masks, units and
  checkpoints look the same as for a standard convolution.
  """
  features: int
  kernel_size: tuple[int, int] = (5, 5)
  padding: int = 1

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    cin = x_bhwc.shape[-1]
    kernel = self.param('kernel', _init, (kh, kw, cin, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return im2col(x_bhwc, kh, kw, self.padding) @ kernel.reshape(kh * kw * cin, -1) + bias


class CNN(nn.Module):
  """Six-layer CNN; works for any `[batch, H, W, C]` input large enough for two 5x5 convs."""
  num_classes: int
  channels: Sequence[int] = (32, 64)
  hidden: int = 512

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    x = x_bhwc
    for i, c in enumerate(self.channels):
      x = PatchConv(c, name=f'conv{i}')(x)
      x = nn.relu(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = x.reshape(x.shape[0], -1)  # HWC flatten: input feature i belongs to channel i % C.
    x = nn.relu(nn.Dense(self.hidden, kernel_init=_init, name='dense0')(x))
    return nn.Dense(self.num_classes, kernel_init=_init, name='head')(x)

  def units(self) -> tuple[Unit, ...]:
    """Structured units: conv filters and hidden neurons. The head's classes are never units."""
    n = len(self.channels)
    convs = tuple(
        Unit(f'conv{i}', (f'conv{i}', 'kernel'), ((f'conv{i}', 'bias'),),
             (((f'conv{i + 1}', 'kernel'), 2),) if i + 1 < n else ((('dense0', 'kernel'), 0),))
        for i in range(n))
    dense = Unit('dense0', ('dense0', 'kernel'), (('dense0', 'bias'),), ((('head', 'kernel'), 0),))
    return convs + (dense,)
