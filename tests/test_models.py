"""Tests for autoflip_jax.models: the patches convolution, the CNN's shapes and its units."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from autoflip_jax import models
from autoflip_jax.models.cnn import CNN, PatchConv, im2col
from autoflip_jax.models.layers import max_pool_2x2


@pytest.mark.parametrize('shape,features,kernel_size', [
    ((2, 12, 12, 1), 4, (5, 5)),
    ((3, 9, 11, 3), 5, (3, 5)),  # non-square input and kernel: catches an h/w or kh/kw swap
])
def test_patch_conv_equals_flax_conv(shape, features, kernel_size):
  kx, kp, kb = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, shape)
  pconv = PatchConv(features, kernel_size=kernel_size, padding=1)
  params = pconv.init(kp, x)['params']
  assert params['kernel'].shape == kernel_size + (shape[-1], features)
  # A non-zero bias, so a bias that is dropped or broadcast on the wrong axis shows.
  params = {'kernel': params['kernel'],
            'bias': jax.random.normal(kb, (features,))}
  conv = nn.Conv(features, kernel_size=kernel_size, padding=((1, 1), (1, 1)))
  got = pconv.apply({'params': params}, x)
  want = conv.apply({'params': params}, x)
  assert got.shape == want.shape == (shape[0], shape[1] - kernel_size[0] + 3,
                                     shape[2] - kernel_size[1] + 3, features)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('shape,padding', [((2, 26, 26, 3), 1), ((1, 27, 25, 2), 1),
                                           ((3, 5, 4, 1), 0), ((2, 7, 9, 2), 0), ((1, 1, 1, 1), 1)])
def test_max_pool_2x2_equals_flax_max_pool(shape, padding):
  """Values and gradients (random inputs: no ties) equal flax's reduce-window pooling, for even
  and odd sizes, with and without padding."""
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  want_fn = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding=((padding,) * 2,) * 2)
  got_fn = lambda x: max_pool_2x2(x, padding)
  want, got = want_fn(x), got_fn(x)
  assert got.shape == want.shape
  np.testing.assert_array_equal(got, want)
  weights = jax.random.normal(jax.random.PRNGKey(2), want.shape)
  grads = [jax.grad(lambda x: jnp.sum(f(x) * weights))(x) for f in (got_fn, want_fn)]
  np.testing.assert_array_equal(grads[0], grads[1])


@pytest.mark.parametrize('shape,padding', [((2, 26, 26, 3), 1), ((2, 7, 9, 2), 1),
                                           ((2, 8, 8, 2), 0), ((1, 5, 5, 1), 1)])
def test_max_pool_gradient_shares_ties_like_autodiff_of_a_max(shape, padding):
  """With ties (blocks of equal values, as a constant background gives), the hand-written
  gradient equals autodiff of the max over each window (reshape and max, the earlier code)."""
  x = jnp.round(jax.random.normal(jax.random.PRNGKey(3), shape) * 2) / 2  # many equal values
  x = x.at[:, :4, :4, :].set(0.5)

  def reshape_max(x):
    _, h, w, _ = x.shape
    oh, ow = (h + 2 * padding - 2) // 2 + 1, (w + 2 * padding - 2) // 2 + 1
    cfg = ((0, 0, 0), (padding, 2 * oh - h - padding, 0), (padding, 2 * ow - w - padding, 0),
           (0, 0, 0))
    x = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), cfg)
    return jnp.max(x.reshape(x.shape[0], oh, 2, ow, 2, x.shape[-1]), axis=(2, 4))

  weights = jax.random.normal(jax.random.PRNGKey(4), reshape_max(x).shape)
  np.testing.assert_array_equal(max_pool_2x2(x, padding), reshape_max(x))
  grads = [jax.jit(jax.grad(lambda x: jnp.sum(f(x) * weights)))(x)
           for f in (lambda x: max_pool_2x2(x, padding), reshape_max)]
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-7)
  assert np.any((np.asarray(grads[1]) != 0) & (np.abs(np.asarray(grads[1])) <
                                                np.abs(np.asarray(weights)).max()))


def test_im2col_feature_layout():
  # x[0, h, w, c] = 100 h + 10 w + c; with no padding, patch (0, 0) feature (i*kw + j)*C + c
  # holds x[0, i, j, c].
  h, w, c = np.meshgrid(np.arange(4), np.arange(5), np.arange(2), indexing='ij')
  x = jnp.asarray((100 * h + 10 * w + c)[None], jnp.float32)
  patches = im2col(x, 2, 3, padding=0)
  assert patches.shape == (1, 3, 3, 2 * 3 * 2)
  want = [100 * i + 10 * j + ch for i in range(2) for j in range(3) for ch in range(2)]
  np.testing.assert_array_equal(patches[0, 0, 0], want)
  # Patch (1, 2) is shifted by one row and two columns.
  np.testing.assert_array_equal(patches[0, 1, 2], np.asarray(want) + 100 + 20)
  # With padding=1 the corner patch starts with zeros.
  padded = im2col(x, 2, 2, padding=1)
  assert padded.shape == (1, 5, 6, 8)
  np.testing.assert_array_equal(padded[0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1])


@pytest.mark.parametrize('hwc,flat', [((28, 28, 1), 7 * 7 * 64), ((32, 32, 3), 8 * 8 * 64)])
def test_default_cnn_output_and_flatten_shapes(hwc, flat):
  model = CNN(num_classes=10)
  x = jnp.zeros((3,) + hwc)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  params = variables['params']
  assert params['dense0']['kernel'].shape == (flat, 512)
  out = jax.eval_shape(model.apply, variables, x)
  assert out.shape == (3, 10)


def test_default_cnn_param_shapes_and_count_28x28x1():
  model = CNN(num_classes=10)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))['params']
  shapes = {'/'.join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()}
  assert shapes == {
      'conv0/kernel': (5, 5, 1, 32), 'conv0/bias': (32,),
      'conv1/kernel': (5, 5, 32, 64), 'conv1/bias': (64,),
      'dense0/kernel': (3136, 512), 'dense0/bias': (512,),
      'head/kernel': (512, 10), 'head/bias': (10,),
  }
  # 28 -conv5,p1-> 26 -pool-> 14 -conv-> 12 -pool-> 7; 7 * 7 * 64 = 3136.
  want = (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 512 + 512) + (512 * 10 + 10)
  assert want == 1_663_370
  assert sum(int(np.prod(s)) for s in shapes.values()) == want


def test_small_cnn_forward():
  model = CNN(num_classes=3, channels=(4, 8), hidden=16)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 12, 12, 1))
  params = model.init(jax.random.PRNGKey(0), x)['params']
  # 12 -> 10 -> pool 6 -> 4 -> pool 3: 3 * 3 * 8 = 72 dense inputs.
  assert params['dense0']['kernel'].shape == (72, 16)
  # Zero biases at init (as the reference code).
  for name in ('conv0', 'conv1', 'dense0', 'head'):
    np.testing.assert_array_equal(params[name]['bias'], 0.0)
  out = model.apply({'params': params}, x)
  assert out.shape == (5, 3)
  assert np.all(np.isfinite(out))
  # Examples are independent: the batch of one gives the same logits.
  np.testing.assert_allclose(model.apply({'params': params}, x[2:3])[0], out[2], atol=1e-5)


def test_get_model_and_validate():
  cfg = {'model': 'cnn', 'model_config': {'channels': (4, 8), 'hidden': 16}}

  class Cfg(dict):
    __getattr__ = dict.__getitem__

  model = models.get_model(Cfg(cfg), num_classes=7)
  assert isinstance(model, CNN)
  assert (model.num_classes, tuple(model.channels), model.hidden) == (7, (4, 8), 16)
  with pytest.raises(ValueError, match='config.model'):
    models.validate(Cfg(model='mlp'))


@pytest.mark.parametrize('channels,hidden,hwc', [((32, 64), 512, (28, 28, 1)),
                                                 ((4, 8), 16, (12, 12, 1)),
                                                 ((4, 8, 6), 16, (32, 32, 3))])
def test_units_paths_and_shapes(channels, hidden, hwc):
  model = CNN(num_classes=10, channels=channels, hidden=hidden)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + hwc))['params']
  units = model.units()
  assert [u.name for u in units] == [f'conv{i}' for i in range(len(channels))] + ['dense0']
  for unit in units:
    kernel = models.get_path(params, unit.kernel)
    n = kernel.shape[-1]
    assert n == (channels + (hidden,))[[u.name for u in units].index(unit.name)]
    assert unit.extras, unit.name
    for path in unit.extras:
      assert models.get_path(params, path).shape == (n,)
    assert unit.consumers, unit.name
    for path, axis in unit.consumers:
      consumer = models.get_path(params, path)
      assert consumer.shape[axis] % n == 0, (unit.name, path, consumer.shape)
  # The classifier's outputs are never a unit.
  assert all(u.kernel != ('head', 'kernel') for u in units)
  consumers = {u.name: u.consumers for u in units}
  assert consumers['dense0'] == ((('head', 'kernel'), 0),)
  assert consumers[f'conv{len(channels) - 1}'] == ((('dense0', 'kernel'), 0),)
