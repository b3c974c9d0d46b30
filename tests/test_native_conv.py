"""`layers.native_conv` (XLA's forward convolution with a hand-written backward pass): the same
values and gradients as the patches convolution, and when `PatchConv` uses it."""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import federated, layout, local, masks
from autoflip_jax.models import layers


def _patches(x, w, padding):
  kh, kw, cin, cout = w.shape
  return layers.im2col(x, kh, kw, padding) @ w.reshape(kh * kw * cin, cout)


@pytest.mark.parametrize('k,padding,cin,cout,size', [
    (5, 1, 1, 8, 12), (5, 1, 6, 10, 9), (3, 1, 4, 4, 6), (3, 0, 3, 5, 7), (5, 2, 3, 5, 8),
    (3, 2, 2, 3, 5)])
def test_values_and_gradients_equal_the_patches(k, padding, cin, cout, size):
  rng = np.random.default_rng(k * 100 + padding * 10 + cin)
  x = jnp.asarray(rng.normal(size=(3, size, size, cin)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(k, k, cin, cout)).astype(np.float32))
  out = size + 2 * padding - k + 1
  g = jnp.asarray(rng.normal(size=(3, out, out, cout)).astype(np.float32))

  def value_and_grads(conv):
    y, vjp = jax.vjp(lambda x, w: conv(x, w, padding), x, w)
    return (y,) + vjp(g)

  want = value_and_grads(_patches)
  got = jax.jit(lambda: value_and_grads(layers.native_conv))()
  for name, a, b in zip(('y', 'dx', 'dkernel'), want, got):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4, err_msg=name)


def test_vmapped_over_clients_it_is_each_clients_convolution():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 7, 7, 2)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(2, 3, 3, 2, 4)).astype(np.float32))
  loss = lambda x, w: jnp.sum(jnp.sin(layers.native_conv(x, w, 1)))
  got = jax.vmap(jax.grad(loss, (0, 1)))(x, w)
  for c in range(2):
    want = jax.grad(lambda x, w: jnp.sum(jnp.sin(_patches(x, w, 1))), (0, 1))(x[c], w[c])
    for a, b in zip(want, got):
      np.testing.assert_allclose(np.asarray(b[c]), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_patch_conv_picks_the_way_by_backend_shape_and_context():
  on_cpu = jax.default_backend() == 'cpu'
  assert layers.uses_native_conv(5, 5, 1, 1) == on_cpu
  assert not layers.uses_native_conv(3, 3, 1, 2)   # strided: patches
  assert not layers.uses_native_conv(1, 1, 0, 1)   # 1x1: a plain matmul
  assert not layers.uses_native_conv(5, 5, 1, 1, channels=1)  # an image's first layer
  with layers.conv_impl('patches'):
    assert not layers.uses_native_conv(5, 5, 1, 1)
  with layers.conv_impl('native'):
    assert layers.uses_native_conv(5, 5, 1, 1)
    assert not layers.uses_native_conv(3, 3, 3, 1)  # padding >= kernel: patches
  assert layers.uses_native_conv(5, 5, 1, 1) == on_cpu  # the block restored the default
  with pytest.raises(ValueError, match='conv_impl'):
    with layers.conv_impl('winograd'):
      pass


@pytest.mark.parametrize('impl', ['patches', 'native'])
def test_patch_conv_equals_flax_conv_either_way(impl):
  x = jax.random.normal(jax.random.key(0), (2, 10, 10, 3))
  conv = layers.PatchConv(6, kernel_size=(5, 5), padding=1)
  with layers.conv_impl(impl):
    params = conv.init(jax.random.key(1), x)['params']
    got = conv.apply({'params': params}, x)
  ref = nn.Conv(6, (5, 5), padding=((1, 1), (1, 1)))
  want = ref.apply({'params': params}, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_vmapped_layouts_trace_the_patches():
  """Under the engine's vmaps (clients or variants in one batch) `auto` keeps the patches, which
  vmap into a batched matmul; a native convolution would become a grouped one."""
  seen = []
  probe = lambda x: seen.append(layers.uses_native_conv(5, 5, 1, 1)) or x
  xs = (jnp.zeros((4, 2)),)
  federated.chunked_map(probe, xs, 0)
  federated.chunked_map(probe, xs, 2)
  federated.vmap_clients(probe, 2)(jnp.zeros((2, 2)))
  assert seen == [False, False, False]
  seen.clear()
  federated.chunked_map(probe, xs, 1)  # one at a time: unbatched
  federated.vmap_clients(probe, 1)(jnp.zeros((1, 2)))
  assert seen == [jax.default_backend() == 'cpu'] * 2


def _ynn_convolutions(compiled) -> int:
  """How many of a compiled program's YNNPACK fusions hold a convolution."""
  text = compiled.as_text()
  return sum(1 for line in text.splitlines()
             if '__ynn_fusion' in line and 'conv_general_dilated' in line)


def test_programs_keep_convolutions_off_ynnpack_on_a_cpu(monkeypatch):
  # XLA's default options send convolutions to YNNPACK, which ran the reference round
  # 1.26-1.28x slower on a CPU (benchmarks/round_throughput.py); layout.jit keeps them
  # with XLA.
  x = jnp.ones((64, 14, 14, 32))
  w = jnp.ones((5, 5, 32, 64)) * 0.01
  grad = lambda x, w: jax.grad(lambda w: jnp.sum(layers.native_conv(x, w, 1) ** 2))(w)
  ours = layout.jit(grad).lower(x, w).compile()
  with layout.xla_defaults():
    assert layout.compiler_options() is None
    default = layout.jit(grad).lower(x, w).compile()
  np.testing.assert_allclose(np.asarray(ours(x, w)), np.asarray(default(x, w)), rtol=1e-4)
  if jax.default_backend() != 'cpu':
    assert layout.compiler_options() is None
    return
  assert layout.compiler_options() == {layout.YNN_OPTION: layout.YNN_DOTS_ONLY}
  assert _ynn_convolutions(ours) == 0
  # A user's own choice in XLA_FLAGS wins.
  monkeypatch.setenv('XLA_FLAGS', f'--{layout.YNN_OPTION}=individual_convolution')
  assert layout.compiler_options() is None


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the option is for XLA:CPU')
def test_the_round_is_compiled_with_the_engine_options():
  model = layers.PatchConv(64, padding=1, name='conv')
  x = jnp.ones((1, 1, 64, 14, 14, 32))
  params = model.init(jax.random.key(0), x[0, 0, :1])['params']
  apply_fn = lambda p, x: model.apply({'params': p}, x).mean(axis=(1, 2))[:, :10]
  data = local.ClientData(x, jnp.zeros((1, 1, 64), jnp.int32), jnp.ones((1, 1, 64), bool))
  args = (data, jnp.array([64]), jnp.arange(1), jax.random.key(0), jnp.float32(0.1), None)
  # A fresh state per call: the round donates it.
  state = lambda: federated.ServerState(jax.tree.map(jnp.copy, params), masks.ones_mask(params),
                                       jnp.int32(0))
  programs = {}
  for way, options in (('ours', contextlib.nullcontext()), ('defaults', layout.xla_defaults())):
    with options:  # the options are read when the round is built
      fn = federated.make_round_fn(apply_fn, optimizer='sgd', local_epochs=1,
                                   clients_per_chunk=1)
    programs[way] = fn.lower(state(), *args).compile()
  assert _ynn_convolutions(programs['ours']) == 0
  assert _ynn_convolutions(programs['defaults']) > 0  # what the option changes
  a, b = programs['ours'](state(), *args)[0], programs['defaults'](state(), *args)[0]
  for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-6)
