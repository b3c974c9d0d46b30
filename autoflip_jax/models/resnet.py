"""CIFAR-style ResNet-18 with GroupNorm (He et al. 2016; the paper's CIFAR ResNet, AUTOFLIP.md §5).

Architecture: a 3x3 stem convolution (stride 1, no max-pool: the CIFAR variant for 32x32 inputs),
four stages of two BasicBlocks with 64, 128, 256 and 512 channels (strides 1, 2, 2, 2), global
average pooling and the classifier. A BasicBlock is conv3x3(stride s) - norm - ReLU - conv3x3 -
norm, plus the shortcut (identity, or conv1x1(stride s) - norm when the shape changes), then ReLU.
Convolutions have no bias (a norm follows each). `width` scales every channel count
(`width = 64` is the standard model: 11,173,962 parameters for 10 classes, 11,220,132 for 100,
the same as with BatchNorm since GroupNorm also has 2 parameters per channel).

Why GroupNorm, not BatchNorm. BatchNorm's running statistics are not parameters that FedAvg can
meaningfully average: each client's statistics describe its own (non-IID) label distribution, and
their average describes no client's activations (Hsieh et al. 2020, "The Non-IID Data Quagmire of
Decentralized Machine Learning", ICML, who replace BatchNorm with GroupNorm; it has since become
the federated-learning standard). Batch statistics also make an example's output depend on the
other examples of its batch, which breaks two invariants our round relies on: `vmap` over
clients must equal a loop of single clients, and padded (invalid) examples must not change a
result. GroupNorm normalises each example on its own, so both hold. `norm_groups` (default 2, as
in Hsieh et al.) is capped to a divisor of each layer's channels.

Structured units (`units()`): the inner channels of every BasicBlock, i.e. conv1's filters, owning
the first norm's scale and bias, with conv2's input axis as consumer. The residual stream's
channels (the stem's filters, every conv2's and shortcut's filters) are tied across blocks by the
identity shortcuts: removing channel c of the stream would need the same c gone from every block
of the stage (and the 1x1 shortcut that starts the next), so they are not declared as units and
are pruned only weight by weight.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoflip_jax.models.layers import (GroupNorm, KeptUnits, kept_indices, lecun, same_conv,
                                        unit_width)
from autoflip_jax.models.units import Unit

STAGES = (1, 2, 4, 8)   # channel multipliers of `width` per stage
STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection; `inner` channels between them."""
  features: int
  stride: int
  norm_groups: int
  inner: int | None = None                   # conv1's filters (shrunk model: fewer)
  kept: tuple[int, ...] | None = None        # their original indices, for the group norm
  norm_statistics: str = 'live'              # norm1's removed channels: `layers.GroupNorm`

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inner = self.features if self.inner is None else self.inner
    y = same_conv(inner, 3, self.stride, 'conv1')(x)
    y = GroupNorm(self.norm_groups, channels=self.features, kept=self.kept,
                  statistics=self.norm_statistics, name='norm1')(y)
    y = nn.relu(y)
    y = same_conv(self.features, 3, 1, 'conv2')(y)
    y = GroupNorm(self.norm_groups, name='norm2')(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = same_conv(self.features, 1, self.stride, 'shortcut_conv')(x)
      x = GroupNorm(self.norm_groups, name='shortcut_norm')(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """CIFAR ResNet-18 on any `[batch, H, W, C]` input (28x28x1 MNIST included)."""
  num_classes: int
  width: int = 64
  norm_groups: int = 2
  kept_units: KeptUnits = ()
  norm_statistics: str = 'live'  # what removed inner channels count for in norm1 (GroupNorm)

  def block_names(self) -> list[tuple[str, int, int]]:
    """(name, channels, stride) of every BasicBlock, input to output."""
    out = []
    for s, (mult, stride) in enumerate(zip(STAGES, STRIDES)):
      for b in range(BLOCKS_PER_STAGE):
        out.append((f'stage{s}_block{b}', self.width * mult, stride if b == 0 else 1))
    return out

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    x = same_conv(self.width, 3, 1, 'stem_conv')(x_bhwc)
    x = nn.relu(GroupNorm(self.norm_groups, name='stem_norm')(x))
    for name, features, stride in self.block_names():
      x = BasicBlock(features, stride, self.norm_groups,
                     inner=unit_width(self.kept_units, name, features),
                     kept=kept_indices(self.kept_units, name),
                     norm_statistics=self.norm_statistics, name=name)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=lecun, name='head')(x)

  def units(self) -> tuple[Unit, ...]:
    """The inner channels of each BasicBlock (see the module docstring)."""
    return tuple(
        Unit(name, (name, 'conv1', 'kernel'), ((name, 'norm1', 'scale'), (name, 'norm1', 'bias')),
             (((name, 'conv2', 'kernel'), 2),))
        for name, _, _ in self.block_names())
