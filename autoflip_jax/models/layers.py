"""Layers shared by the model zoo: patches convolution, depthwise convolution, group norm.

Convolutions are written as image patches times a matmul (`PatchConv`) and depthwise convolutions
as a sum of shifted slices times per-channel weights (`DepthwiseConv`). On XLA:CPU this keeps the
federated round fast: a `lax.conv` inside `lax.scan` and `vmap`ped over clients becomes a grouped
convolution that runs several times slower, while a patches-matmul vmaps into a plain batched
matmul (jax-ml/jax#12868 and our measurements in the core issue). The maths is the same as
`flax.linen.Conv` (with `feature_group_count` for the depthwise case), which the tests check.

One exception, on a CPU (`conv_impl`, default `auto`): a stride-1 k x k `PatchConv` on 4 or more
input channels (`NATIVE_MIN_CHANNELS`; an image's first layer keeps the patches) runs as
`native_conv`, XLA's own convolution forward with a hand-written backward pass made of two more
forward convolutions (the input's gradient: the output's gradient against the flipped kernel;
the kernel's: the input against the output's gradient, batch and channels swapped). XLA:CPU
runs a plain NHWC/HWIO forward convolution fast (its Eigen kernel, no patch matrix), but the
convolutions that autodiff writes for the kernel's gradient 100 times slower; and the patch
matrix of a 5x5 layer is 25 copies of its input that the CPU writes and reads back slower than
it multiplies them (`benchmarks/round_throughput.py`, README "Engine speed"). Under the engine's
vmap over clients or variants (`layout.vmapped_models`: vmapped, a native convolution with
per-client kernels becomes a grouped convolution, several times slower on a CPU, where the
patches vmap into a batched matmul) it is the patches again, as elsewhere (GPU, TPU) and for
strided convolutions. Shrunk models keep their unit layers at multiples of 8 units there
(`unit_alignment`).

Kernels are stored as `[kh, kw, in, out]` like `flax.linen.Conv` (`[kh, kw, 1, channels]` for a
depthwise one), so masks, units, accounting and checkpoints read them the same way.

Shrunk models. A model built for a structured mask (`shrink.py`) carries `kept_units`: for each
declared unit layer, the original indices of the units it still has. `kept_indices` and
`unit_width` read them; `GroupNorm` uses them to keep normalising over the *original* groups.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import layout

KeptUnits = tuple[tuple[str, tuple[int, ...]], ...]


def zero_size_safe(init: Callable) -> Callable:
  """`init`, but zeros for a shape with a zero dimension (a layer whose units were all removed),
  where fan-based initialisers divide by zero; Flax evaluates the initialiser's shape on apply."""
  def safe(key, shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype) if 0 in tuple(shape) else init(key, shape, dtype)
  return safe


xavier = zero_size_safe(nn.initializers.xavier_uniform())
lecun = zero_size_safe(nn.initializers.lecun_normal())
he_fan_out = zero_size_safe(nn.initializers.variance_scaling(2.0, 'fan_out', 'normal'))


def kept_indices(kept_units: KeptUnits, name: str) -> tuple[int, ...] | None:
  """Original indices of the units that unit layer `name` still has; None: all of them."""
  return dict(kept_units).get(name)


def unit_width(kept_units: KeptUnits, name: str, full: int) -> int:
  """Number of units of layer `name`: `full` unless the model was shrunk."""
  kept = kept_indices(kept_units, name)
  return full if kept is None else len(kept)


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
  return (size + 2 * padding - k) // stride + 1


def _shifted(x_bhwc: jax.Array, kh: int, kw: int, padding: int, stride: int):
  """The kh * kw shifted, strided views of the padded input, each `[b, h', w', c]`."""
  p = padding
  x = jnp.pad(x_bhwc, ((0, 0), (p, p), (p, p), (0, 0)))
  h = _out_size(x_bhwc.shape[1], kh, stride, p)
  w = _out_size(x_bhwc.shape[2], kw, stride, p)
  return [x[:, i:i + stride * (h - 1) + 1:stride, j:j + stride * (w - 1) + 1:stride, :]
          for i in range(kh) for j in range(kw)]


CONV_IMPLS = ('auto', 'patches', 'native')
_CONV_IMPL = ['auto']  # read when a model is traced (`conv_impl` changes it for a block)


@contextlib.contextmanager
def conv_impl(name: str):
  """Within the block, traced `PatchConv`s use `name`: `auto` (native stride-1 convolutions on a
  CPU, else patches), `patches` or `native` (stride 1 only; strided ones stay patches).
  Benchmarks time both ways side by side with it; a traced program keeps the way it was traced
  with."""
  if name not in CONV_IMPLS:
    raise ValueError(f'conv_impl {name!r} is not one of {CONV_IMPLS}')
  before = _CONV_IMPL[0]
  _CONV_IMPL[0] = name
  try:
    yield
  finally:
    _CONV_IMPL[0] = before


NATIVE_MIN_CHANNELS = 4  # `auto`: fewer input channels (an image's first layer) keep the patches


def uses_native_conv(kh: int, kw: int, padding: int, stride: int, channels: int = 64) -> bool:
  """Whether a `PatchConv` of this shape (`channels`: its input channels), traced now, runs as
  `native_conv`. `auto` keeps the patches for a layer on 1-3 input channels: its gradient
  needs no input gradient, where the native way gains, and its patch matrix is small, so the
  patches were faster there (the CNN's first layer, 13.4 against 17.3 ms a step of 200)."""
  impl = _CONV_IMPL[0]
  if impl == 'auto':
    impl = ('native' if jax.default_backend() == 'cpu' and not layout.is_vmapped()
            and channels >= NATIVE_MIN_CHANNELS else 'patches')
  return (impl == 'native' and stride == 1 and (kh, kw) != (1, 1)
          and 0 <= padding <= min(kh, kw) - 1)


def unit_alignment() -> int:
  """Unit layers of a shrunk model keep a multiple of this many units (`shrink.plan`): 8 where
  `auto` runs native convolutions (a CPU), whose speed drops on widths that are not (a 5x5
  convolution on 22 -> 45 channels took as long as on 24 -> 48, 1.4x the FLOPs' time); else 1."""
  return 8 if _CONV_IMPL[0] != 'patches' and jax.default_backend() == 'cpu' else 1


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _forward_conv(x_bhwc: jax.Array, kernel: jax.Array, pad_h: int, pad_w: int) -> jax.Array:
  return jax.lax.conv_general_dilated(x_bhwc, kernel, (1, 1), ((pad_h, pad_h), (pad_w, pad_w)),
                                      dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def native_conv(x_bhwc: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """Stride-1 convolution, symmetric zero `padding` < kernel size, kernel `[kh, kw, in, out]`:
  XLA's forward convolution, and a backward pass of two more (module docstring)."""
  return _forward_conv(x_bhwc, kernel, padding, padding)


def _native_conv_fwd(x_bhwc, kernel, padding):
  return native_conv(x_bhwc, kernel, padding), (x_bhwc, kernel)


def _native_conv_bwd(padding, residuals, g_bhwo):
  x_bhwc, kernel = residuals
  kh, kw = kernel.shape[:2]
  # dx[b, h, w, c] = sum_{i, j, o} g[b, h + p - i, w + p - j, o] kernel[i, j, c, o]: g against
  # the flipped kernel with in and out swapped, padded by k - 1 - p.
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  dx = _forward_conv(g_bhwo, flipped, kh - 1 - padding, kw - 1 - padding)
  # dkernel[i, j, c, o] = sum_{b, h, w} x_pad[b, h + i, w + j, c] g[b, h, w, o]: a convolution
  # of x as [c, h, w, b] (channels as its batch) with g as the kernel [h, w, b, o].
  dk = _forward_conv(x_bhwc.transpose(3, 1, 2, 0), g_bhwo.transpose(1, 2, 0, 3), padding,
                     padding).transpose(1, 2, 0, 3)
  return dx.astype(x_bhwc.dtype), dk.astype(kernel.dtype)


native_conv.defvjp(_native_conv_fwd, _native_conv_bwd)


# The layers' pure functions are jitted so that an eager call (Flax's `init` runs the forward
# pass op by op) compiles one program per layer shape instead of one per slice and add; inside
# an outer jit they are inlined.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def im2col(x_bhwc: jax.Array, kh: int, kw: int, padding: int, stride: int = 1) -> jax.Array:
  """Patches `[b, h', w', kh * kw * c]`, feature index `(i * kw + j) * c + ch`.

  Built from shifted slices rather than `lax.conv_general_dilated_patches`: the slices'
  gradient is a sum of padded copies, while the patches primitive's gradient is a convolution
  with a one-hot kernel that costs several times the layer's own FLOPs.
  """
  return jnp.concatenate(_shifted(x_bhwc, kh, kw, padding, stride), axis=-1)


@functools.partial(jax.jit, static_argnums=(2,))
def depthwise_conv(x_bhwc: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise conv with kernel `[kh, kw, 1, c]`, padding (k - 1) // 2: sum of weighted views.

  The views are stacked and reduced in one op rather than summed one by one: the same maths
  with a third of the HLO ops, which matters for compile time in the federated round.
  """
  kh, kw, _, c = kernel.shape
  views = jnp.stack(_shifted(x_bhwc, kh, kw, (kh - 1) // 2, stride), axis=-2)  # [b,h,w,k*k,c]
  return jnp.sum(views * kernel.reshape(kh * kw, c), axis=-2)


def _pool_windows(x_bhwc: jax.Array, padding: int):
  """The four strided views `[b, oh, ow, c]` of the -inf-padded input, one per window corner:
  (0, 0), (0, 1), (1, 0), (1, 1)."""
  _, h, w, _ = x_bhwc.shape
  oh, ow = _out_size(h, 2, 2, padding), _out_size(w, 2, 2, padding)
  # Pad to exactly 2 * out (negative high padding crops a row no window reaches).
  config = ((0, 0, 0), (padding, 2 * oh - h - padding, 0), (padding, 2 * ow - w - padding, 0),
            (0, 0, 0))
  x = jax.lax.pad(x_bhwc, jnp.array(-jnp.inf, x_bhwc.dtype), config)
  return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool_2x2(x_bhwc: jax.Array, padding: int = 1) -> jax.Array:
  """2x2 max pooling with stride 2 and symmetric padding `padding` (PyTorch's
  `MaxPool2d(2, padding=padding)`): the elementwise max of the four window corners' views.

  The same values as `nn.max_pool(x, (2, 2), strides=(2, 2), padding=((p, p), (p, p)))`, but
  XLA:CPU runs a reduce-window and its select-and-scatter gradient several times slower. The
  gradient is written by hand (`_max_pool_bwd`): each corner whose value is the window's max
  gets the output's gradient, shared equally among tied corners (what autodiff of a max over
  the window gives, in one elementwise pass that interleaves the four corners back; 2-3x faster
  than autodiff of the reshape-and-max this replaced, `tests/test_models.py` checks both). At
  ties both are subgradients, and after a ReLU the tied zeros get no gradient either way.
  """
  a, b, c, d = _pool_windows(x_bhwc, padding)
  return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _max_pool_fwd(x_bhwc, padding):
  out = max_pool_2x2(x_bhwc, padding)
  return out, (x_bhwc, out)


def _max_pool_bwd(padding, residuals, g):
  x_bhwc, out = residuals
  batch, h, w, ch = x_bhwc.shape
  oh, ow = out.shape[1:3]
  hits = [corner == out for corner in _pool_windows(x_bhwc, padding)]
  share = g / sum(hit.astype(g.dtype) for hit in hits)
  parts = [jnp.where(hit, share, jnp.zeros((), g.dtype)) for hit in hits]
  # [b, oh, 2, ow, 2, c]: the corners back in their places, then the padding cut off (and the
  # rows no window reached given zeros).
  grid = jnp.stack([jnp.stack(parts[:2], axis=3), jnp.stack(parts[2:], axis=3)], axis=2)
  grid = grid.reshape(batch, 2 * oh, 2 * ow, ch)
  config = ((0, 0, 0), (-padding, h + padding - 2 * oh, 0), (-padding, w + padding - 2 * ow, 0),
            (0, 0, 0))
  return (jax.lax.pad(grid, jnp.zeros((), g.dtype), config),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


class PatchConv(nn.Module):
  """2-D convolution as image patches (`im2col`) times a kernel matmul; symmetric zero padding."""
  features: int
  kernel_size: tuple[int, int] = (5, 5)
  padding: int = 1
  strides: int = 1
  use_bias: bool = True
  kernel_init: Callable = xavier

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    cin = x_bhwc.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, cin, self.features))
    if uses_native_conv(kh, kw, self.padding, self.strides, cin):
      y = native_conv(x_bhwc, kernel, self.padding)
    else:
      if kh == kw == 1 and self.padding == 0:
        patches = x_bhwc[:, ::self.strides, ::self.strides, :]
      else:
        patches = im2col(x_bhwc, kh, kw, self.padding, self.strides)
      y = patches @ kernel.reshape(kh * kw * cin, self.features)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


def same_conv(features: int, k: int, stride: int, name: str) -> PatchConv:
  """A bias-free k x k `PatchConv`, 'same' padding, He (fan-out) init (ResNet, EfficientNet)."""
  return PatchConv(features, kernel_size=(k, k), padding=(k - 1) // 2, strides=stride,
                   use_bias=False, kernel_init=he_fan_out, name=name)


class DepthwiseConv(nn.Module):
  """Depthwise 2-D convolution (one kh x kw filter per channel), no bias.

  Kernel `[kh, kw, 1, channels]` (flax's layout for `feature_group_count = channels`); computed as
  the sum over the kh * kw shifted slices of the input times that position's per-channel weights.
  """
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  kernel_init: Callable = he_fan_out

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    c = x_bhwc.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, 1, c))
    return depthwise_conv(x_bhwc, kernel, self.strides)


def groups_for(channels: int, num_groups: int) -> int:
  """Groups actually used: the largest divisor of `channels` not above `num_groups`."""
  return max(g for g in range(1, min(num_groups, max(channels, 1)) + 1) if channels % g == 0)


class GroupNorm(nn.Module):
  """Group normalisation (Wu & He 2018) that stays exact when channels are removed.

  Each example is normalised per group of channels over the spatial axes and the group's
  channels; then `scale` and `bias` per channel (2 parameters per channel, like BatchNorm's
  affine). The unpruned layer has `channels` channels in contiguous groups. A shrunk layer keeps
  only the channels `kept` (original indices) and normalises over the ORIGINAL groups, counting
  each removed channel as the all-zero channel it is in the masked model: the group mean and
  variance divide by the original group size. That is what makes the shrunk model compute
  exactly what the masked model computes (a removed channel is zero before the norm because its
  filter is pruned, and zero after it because its scale and bias are).

  `statistics`: what a removed channel counts for. 'zeros' (above): it stays in its group as
  the zero channel of the masked model, so removing channels dilutes the group's mean and
  variance and scales the live channels up by about sqrt(size / live channels). 'live': the
  group's statistics are over its live channels only, what a model built that narrow would
  compute (and, per channel, what the paper's BatchNorm does: a removed channel leaves the
  others' normalisation alone). A channel is live when its scale or bias is nonzero (a removed
  unit's are exactly 0 in the masked model; a trained scale is never exactly 0), so the masked
  and the shrunk model still compute the same; an unpruned layer computes the usual GroupNorm.
  """
  num_groups: int = 2
  channels: int | None = None          # channels of the unpruned layer (default: the input's)
  kept: Sequence[int] | None = None    # original indices of the channels present
  epsilon: float = 1e-5
  statistics: str = 'zeros'            # or 'live' (see above)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    full = self.channels if self.channels is not None else c
    groups = groups_for(full, self.num_groups)
    size = full // groups
    idx = np.arange(c) if self.kept is None else np.asarray(self.kept, np.int64)
    if idx.shape != (c,):
      raise ValueError(f'GroupNorm got {c} channels but {len(idx)} kept indices')
    scale = self.param('scale', nn.initializers.ones, (c,))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    if self.statistics not in NORM_STATISTICS:
      raise ValueError(f'GroupNorm statistics={self.statistics!r} is not one of {NORM_STATISTICS}')
    return group_norm(x, scale, bias, tuple(int(i) for i in idx), size, groups, self.epsilon,
                      self.statistics == 'live')


NORM_STATISTICS = ('zeros', 'live')


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, kept: tuple[int, ...], size: int,
               groups: int, epsilon: float, live: bool = False) -> jax.Array:
  """`GroupNorm`'s maths: channel `k` of `x` is original channel `kept[k]`, in group
  `kept[k] // size`; every group has `size` channels in the unpruned layer. `live`: the
  statistics over the live channels (nonzero scale or bias) only (`GroupNorm.statistics`)."""
  c = x.shape[-1]
  axes = tuple(range(1, x.ndim - 1))
  positions = math.prod(x.shape[1:-1])
  if live:  # only the live channels count: their sums are weighted by `alive`
    alive = ((scale != 0) | (bias != 0)).astype(x.dtype)                     # [c]
  if kept == tuple(range(size * groups)):
    # The unpruned layer: contiguous groups, the usual reshape (fewer ops to compile).
    xg = x.reshape(x.shape[:-1] + (groups, size))
    over = axes + (x.ndim,)
    if live:
      a = alive.reshape(groups, size)
      n = jnp.maximum(jnp.sum(a, -1, keepdims=True), 1.0) * positions
      mean = jnp.sum(xg * a, over, keepdims=True) / n
      d = xg - mean
      var = jnp.sum(d * d * a, over, keepdims=True) / n
    else:
      mean = jnp.mean(xg, over, keepdims=True)
      d = xg - mean
      var = jnp.mean(d * d, over, keepdims=True)
    return (d * jax.lax.rsqrt(var + epsilon)).reshape(x.shape) * scale + bias
  onehot = np.eye(groups, dtype=np.float32)[np.asarray(kept, np.int64) // size].reshape(c, groups)
  weigh = (lambda t: t * alive) if live else (lambda t: t)
  # Each group's count: its live channels, or its channels in the unpruned layer.
  n = jnp.maximum(alive @ onehot, 1.0) * positions if live else size * positions
  shape = (x.shape[0],) + (1,) * len(axes) + (c,)
  mean_g = weigh(jnp.sum(x, axes)) @ onehot / n                                # [b, groups]
  d = x - (mean_g @ onehot.T).reshape(shape)
  var_g = weigh(jnp.sum(d * d, axes)) @ onehot
  if not live:  # two-pass variance; a removed channel adds (0 - mean)^2 at each position
    var_g = var_g + (size - onehot.sum(0)) * positions * mean_g ** 2
  inv = jax.lax.rsqrt(((var_g / n) @ onehot.T).reshape(shape) + epsilon)
  return d * inv * scale + bias
