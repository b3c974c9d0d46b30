"""EfficientNet-B3 (Tan & Le 2019) with GroupNorm: the paper's CIFAR-100 model (AUTOFLIP.md §5).

The reference architecture, as torchvision's `efficientnet_b3` builds it: B0's seven MBConv stages
scaled by width 1.2 and depth 1.4 (channels `make_divisible(c * 1.2, 8)`, blocks
`ceil(n * 1.4)`), a 3x3 stride-2 stem with 40 filters, 26 MBConv blocks, a 1x1 conv to 1536
channels, global average pooling and the classifier. An MBConv block: 1x1 expansion conv (absent
when the expansion ratio is 1) - norm - swish, depthwise kxk conv (stride s) - norm - swish,
squeeze-excitation (global average pool, dense to `max(1, in // 4)` with swish, dense back with
a sigmoid gate that scales the channels), 1x1 projection conv - norm, and the residual add when
the block keeps its shape. Stochastic depth and the classifier's dropout are off: training is
deterministic, as the rest of our models.

Norm. GroupNorm instead of BatchNorm, for the reasons given in `resnet.py` (batch statistics do
not average under FedAvg and break the vmap/padding invariance); `norm_groups` (default 2) is
capped to a divisor of each layer's channels. GroupNorm has BatchNorm's 2 affine parameters per
channel, so the trainable parameter count is the reference's: torchvision's 12,233,232 for 1000
classes is ours for 1000 classes; for 100 classes it is 12,233,232 - 1536 * 900 - 900 =
10,849,932 (tests/test_models_zoo.py). The paper quotes 10,838,784 for its CIFAR-100 EfficientNet-B3
(AUTOFLIP.md §5), 11,148 (0.10%) fewer: a difference in the paper's own implementation or
counting that its text does not specify; we match the published reference architecture.

`width_mult` and `depth_mult` scale the network like the compound scaling does (the CI variant:
small multipliers); `kept_units` is set on shrunk models (`shrink.py`).

Structured units (`units()`): the expanded channels of every MBConv with an expansion conv: the
expansion conv's filters (owning its norm, the depthwise norm and the SE gate's bias), consumed
by the depthwise kernel, the SE squeeze (input axis) and excite (output axis) kernels and the
projection conv's input. In the first stage (expansion ratio 1) the depthwise conv runs on the
block's input: for its first block that is the stem's output, so the stem's filters are the unit
there (when that block has no residual add, as in B3: 40 -> 24 channels); its later blocks run
on the residual stream, whose channels are tied across blocks by the identity shortcuts and are
not units (as in ResNet). The 1x1 head conv's 1536 filters (`top`) are units too, consumed by
the classifier.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoflip_jax.models.layers import (DepthwiseConv, GroupNorm, KeptUnits, he_fan_out,
                                        kept_indices, same_conv, unit_width, zero_size_safe)
from autoflip_jax.models.units import Unit

# B0's stages: (expand ratio, kernel, stride, input channels, output channels, blocks).
B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1))
_dense_init = zero_size_safe(nn.initializers.variance_scaling(1.0 / 3.0, 'fan_out', 'uniform'))


def make_divisible(v: float, divisor: int = 8) -> int:
  """Channels rounded to a multiple of `divisor`, never more than 10% below `v` (TF/torchvision)."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


class MBConv(nn.Module):
  """Inverted-residual block with squeeze-excitation; `expanded` channels inside."""
  out: int
  expand_ratio: int
  kernel: int
  stride: int
  expanded: int              # expanded channels of the unpruned block
  squeeze: int
  norm_groups: int
  residual: bool = False
  width: int | None = None   # expanded channels present (shrunk model)
  kept: tuple[int, ...] | None = None
  norm_statistics: str = 'live'  # removed expanded channels in their norms: `layers.GroupNorm`

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = self.expanded if self.width is None else self.width
    norm = lambda name: GroupNorm(self.norm_groups, channels=self.expanded, kept=self.kept,
                                  statistics=self.norm_statistics, name=name)
    y = x
    if self.expand_ratio != 1:
      y = nn.swish(norm('expand_norm')(same_conv(width, 1, 1, 'expand_conv')(y)))
    y = DepthwiseConv((self.kernel, self.kernel), self.stride, name='dw_conv')(y)
    y = nn.swish(norm('dw_norm')(y))
    s = jnp.mean(y, axis=(1, 2))                                     # [b, width]
    s = nn.swish(nn.Dense(self.squeeze, kernel_init=he_fan_out, name='se_reduce')(s))
    s = nn.sigmoid(nn.Dense(width, kernel_init=he_fan_out, name='se_expand')(s))
    y = y * s[:, None, None, :]
    y = same_conv(self.out, 1, 1, 'project_conv')(y)
    y = GroupNorm(self.norm_groups, name='project_norm')(y)
    if self.residual:
      y = y + x
    return y


class EfficientNet(nn.Module):
  """EfficientNet on any `[batch, H, W, C]` input; B3 by default."""
  num_classes: int
  width_mult: float = 1.2
  depth_mult: float = 1.4
  norm_groups: int = 2
  kept_units: KeptUnits = ()
  norm_statistics: str = 'live'  # what removed channels count for in their norms (GroupNorm)

  @property
  def stem_channels(self) -> int:
    return make_divisible(32 * self.width_mult)

  @property
  def top_channels(self) -> int:
    return 4 * make_divisible(B0_STAGES[-1][4] * self.width_mult)

  def _stem_is_unit(self) -> bool:
    """The stem's filters are units iff the first block expands nothing and adds no residual."""
    first = self.blocks()[0]
    return first['expand_ratio'] == 1 and not first['residual']

  def blocks(self) -> list[dict]:
    """Every MBConv's settings, input to output (name, channels, expansion, kernel, stride)."""
    out = []
    for e, k, s, cin, cout, n in B0_STAGES:
      cin = make_divisible(cin * self.width_mult)
      cout = make_divisible(cout * self.width_mult)
      for b in range(int(math.ceil(n * self.depth_mult))):
        c = cin if b == 0 else cout
        stride = s if b == 0 else 1
        out.append(dict(name=f'block{len(out)}', cin=c, out=cout, expand_ratio=e, kernel=k,
                        stride=stride, expanded=make_divisible(c * e), squeeze=max(1, c // 4),
                        residual=stride == 1 and c == cout))
    return out

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    kept = lambda name: kept_indices(self.kept_units, name)
    stem = unit_width(self.kept_units, 'stem', self.stem_channels)
    x = same_conv(stem, 3, 2, 'stem_conv')(x_bhwc)
    x = nn.swish(GroupNorm(self.norm_groups, channels=self.stem_channels, kept=kept('stem'),
                           statistics=self.norm_statistics, name='stem_norm')(x))
    for i, b in enumerate(self.blocks()):
      # A first block without expansion runs on the stem's (maybe shrunk) channels.
      unit = 'stem' if self._stem_is_unit() and i == 0 else b['name']
      x = MBConv(b['out'], b['expand_ratio'], b['kernel'], b['stride'], b['expanded'],
                 b['squeeze'], self.norm_groups, b['residual'],
                 width=unit_width(self.kept_units, unit, b['expanded']), kept=kept(unit),
                 norm_statistics=self.norm_statistics, name=b['name'])(x)
    top = unit_width(self.kept_units, 'top', self.top_channels)
    x = same_conv(top, 1, 1, 'top_conv')(x)
    x = nn.swish(GroupNorm(self.norm_groups, channels=self.top_channels, kept=kept('top'),
                           statistics=self.norm_statistics, name='top_norm')(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=_dense_init, name='head')(x)

  def units(self) -> tuple[Unit, ...]:
    """Expanded channels of each MBConv, the stem's filters and the head conv's filters."""
    def inner(block: str, producer: tuple[str, ...], norm: tuple[str, ...]) -> tuple:
      extras = (norm + ('scale',), norm + ('bias',), (block, 'dw_norm', 'scale'),
                (block, 'dw_norm', 'bias'), (block, 'se_expand', 'bias'))
      consumers = (((block, 'dw_conv', 'kernel'), 3), ((block, 'se_reduce', 'kernel'), 0),
                   ((block, 'se_expand', 'kernel'), 1), ((block, 'project_conv', 'kernel'), 2))
      return producer + ('kernel',), extras, consumers

    out = []
    for i, b in enumerate(self.blocks()):
      name = b['name']
      if b['expand_ratio'] != 1:
        out.append(Unit(name, *inner(name, (name, 'expand_conv'), (name, 'expand_norm'))))
      elif i == 0 and self._stem_is_unit():
        out.append(Unit('stem', *inner(name, ('stem_conv',), ('stem_norm',))))
    out.append(Unit('top', ('top_conv', 'kernel'),
                    (('top_norm', 'scale'), ('top_norm', 'bias')), ((('head', 'kernel'), 0),)))
    return tuple(out)
