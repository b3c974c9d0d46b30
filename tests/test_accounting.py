"""Tests for autoflip_jax.accounting: hand-computed FLOPs and bytes, and XLA's own FLOP count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import accounting
from autoflip_jax.models.cnn import CNN
from autoflip_jax.models.efficientnet import EfficientNet
from autoflip_jax.models import layers
from autoflip_jax.models.lstm import LSTM
from autoflip_jax.models.resnet import ResNet18


def _setup(model, input_shape, dtype=jnp.float32):
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  return params, accounting.kernel_positions(model.apply, params, input_shape, dtype)


def _ones(params):
  return jax.tree.map(lambda p: np.ones(p.shape, bool), params)


# --- FLOPs by hand -------------------------------------------------------------------------

def test_cnn_dense_flops_hand_computed():
  params, positions = _setup(CNN(num_classes=10), (28, 28, 1))
  # 28 -conv 5x5, pad 1-> 26 -pool-> 14 -conv-> 12 -pool-> 7; 2 FLOPs a multiply-add, 1 a bias.
  assert positions == {('conv0', 'kernel'): 26 * 26, ('conv1', 'kernel'): 12 * 12,
                       ('dense0', 'kernel'): 1, ('head', 'kernel'): 1}
  want = (26 * 26 * (2 * 25 * 1 * 32 + 32) + 12 * 12 * (2 * 25 * 32 * 64 + 64)
          + (2 * 3136 * 512 + 512) + (2 * 512 * 10 + 10))
  assert want == 19_080_074
  assert accounting.flops_per_example(params, None, positions, 'dense') == want
  # A dense mask counts the same in every mode.
  for mode in ('sparse', 'structured'):
    assert accounting.flops_per_example(params, _ones(params), positions, mode) == want


def test_cnn_sparse_and_structured_flops_for_a_hand_made_mask():
  # 12x12x1 -> conv0 (5,5,1,2) at 10x10 -> pool 6 -> conv1 (5,5,2,3) at 4x4 -> pool 3 -> 27
  # -> dense0 (27, 4) -> head (4, 3).
  params, positions = _setup(CNN(num_classes=3, channels=(2, 3), hidden=4), (12, 12, 1))
  assert positions[('conv0', 'kernel')] == 100 and positions[('conv1', 'kernel')] == 16
  m = _ones(params)
  m['conv0']['kernel'][..., 1] = False          # conv0 filter 1 gone (its output is dead)
  m['conv1']['kernel'][:, :, 1, :] = False      # ... and its input slice in conv1
  m['conv1']['kernel'][0, 0, 0, 0] = False      # one more single weight
  m['dense0']['kernel'][:5, 2] = False          # five single weights of neuron 2
  sparse = (100 * (2 * 25 + 1)                  # conv0: 25 weights, 1 live output
            + 16 * (2 * (25 * 3 - 1) + 3)       # conv1: 74 weights, 3 live outputs
            + (2 * (27 * 4 - 5) + 4)            # dense0
            + (2 * 12 + 3))                     # head
  assert accounting.flops_per_example(params, m, positions, 'sparse') == sparse
  structured = (100 * (2 * 25 * 1 * 1 + 1)     # conv0: window 25 x 1 input x 1 output
                + 16 * (2 * 25 * 1 * 3 + 3)     # conv1: 1 live input channel x 3 outputs
                + (2 * 27 * 4 + 4) + (2 * 4 * 3 + 3))
  assert accounting.flops_per_example(params, m, positions, 'structured') == structured
  dense = accounting.flops_per_example(params, None, positions, 'dense')
  assert sparse < structured < dense
  with pytest.raises(ValueError, match='mode'):
    accounting.flops_per_example(params, m, positions, 'magic')


def test_lstm_flops_count_every_time_step_and_the_bias_once():
  e, h, v, t = 8, 16, 11, 80
  params, positions = _setup(LSTM(num_classes=v, vocab_size=v, embed=e, hidden=(h, h)), (t,),
                             jnp.int32)
  assert positions == {('lstm0', 'input_kernel'): t, ('lstm0', 'recurrent_kernel'): t,
                       ('lstm1', 'input_kernel'): t, ('lstm1', 'recurrent_kernel'): t,
                       ('head', 'kernel'): 1}
  layer0 = t * (2 * e * 4 * h + 2 * h * 4 * h + 4 * h)
  layer1 = t * (2 * h * 4 * h + 2 * h * 4 * h + 4 * h)
  head = 2 * h * v + v
  assert accounting.flops_per_example(params, None, positions, 'dense') == layer0 + layer1 + head


def test_depthwise_and_squeeze_excitation_flops():
  model = EfficientNet(num_classes=10, width_mult=0.5, depth_mult=0.2)
  params, positions = _setup(model, (32, 32, 3))
  first = model.blocks()[1]                     # 16x16 input, stride 2, 3x3, expands 8 -> 48
  name, c = first['name'], first['expanded']
  assert (first['kernel'], first['stride'], c) == (3, 2, 48)
  assert positions[(name, 'dw_conv', 'kernel')] == 8 * 8
  assert positions[(name, 'se_reduce', 'kernel')] == 1
  assert positions[(name, 'se_expand', 'kernel')] == 1
  block = {k: v for k, v in positions.items() if k[0] == name}
  sq = first['squeeze']
  want = (16 * 16 * 2 * 8 * c                   # 1x1 expansion at 16x16, no bias (a norm follows)
          + 8 * 8 * 2 * 9 * c                   # depthwise: 9 weights per channel, not 9 x c
          + (2 * c * sq + sq) + (2 * sq * c + c)  # squeeze-excitation, once per example
          + 8 * 8 * 2 * c * first['out'])       # 1x1 projection
  got = accounting.flops_per_example({name: params[name]}, None, block, 'dense')
  assert got == want


# --- XLA's count -----------------------------------------------------------------------------

# (model, input shape, dtype, tolerance). XLA's `cost_analysis()` counts every HLO op: besides
# the kernels' multiply-adds it counts normalisation (about 8 FLOPs an element), activations,
# residual adds, pooling, the LSTM gates' products, and elementwise producers that fusion
# duplicates into each of an im2col's shifted slices. We count only kernels and biases, so XLA is
# higher by that elementwise work: ~0.3% for the CNN, ~1% for the LSTM, ~4% for ResNet-18 and
# ~14% for EfficientNet, whose cheap 1x1 and depthwise convs leave elementwise work a large
# share. (Our depthwise count, 2 k^2 per output, is one FLOP above XLA's k^2 products plus
# k^2 - 1 sums; negligible.) The tolerance bounds XLA / ours - 1 from above; XLA is never lower.
XLA_CASES = {
    # XLA also counts elementwise ops: the pooling's max of four corner views is 2.4%.
    'cnn': (CNN(num_classes=10), (28, 28, 1), jnp.float32, 0.03),
    'resnet18': (ResNet18(num_classes=10), (32, 32, 3), jnp.float32, 0.06),
    'efficientnet': (EfficientNet(num_classes=100, depth_mult=0.2), (32, 32, 3), jnp.float32,
                     0.17),
    # XLA counts a loop body once: unroll the 20 steps so that every step is counted.
    'lstm': (LSTM(unroll=True), (20,), jnp.int32, 0.02),
}


@pytest.mark.parametrize('name', list(XLA_CASES))
def test_dense_flops_agree_with_xla_cost_analysis(name):
  model, shape, dtype, tol = XLA_CASES[name]
  params, positions = _setup(model, shape, dtype)
  ours = accounting.flops_per_example(params, None, positions, 'dense')
  x = jax.ShapeDtypeStruct((1,) + shape, dtype)

  def xla_flops():
    # A new jit each time: the program is traced under the conv_impl of the call.
    compiled = jax.jit(lambda p, x: model.apply({'params': p}, x)).lower(params, x).compile()
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)['flops']

  # Ours counts every kernel tap at every output position, as the patch matmul does.
  with layers.conv_impl('patches'):
    xla = xla_flops()
  assert ours <= xla <= ours * (1 + tol), (name, xla / ours)
  # XLA's native convolution (a CPU's stride-1 convs) skips the taps on the zero padding.
  with layers.conv_impl('native'):
    native = xla_flops()
  assert 0.85 * ours <= native <= xla, (name, native / ours)


# --- Bytes ---------------------------------------------------------------------------------

def test_mask_bytes_picks_the_cheaper_encoding():
  # 1000 params: a bitmap is 125 bytes; int32 indices are 4 bytes per kept value.
  assert accounting.mask_bytes(10, 1000) == (40, 'indices')
  assert accounting.mask_bytes(31, 1000) == (124, 'indices')
  assert accounting.mask_bytes(32, 1000) == (125, 'bitmap')   # 128 > 125
  assert accounting.mask_bytes(700, 1000) == (125, 'bitmap')
  assert accounting.mask_bytes(1000, 1000) == (0, 'dense')
  assert accounting.mask_bytes(0, 1000) == (0, 'indices')
  # A tie goes to the bitmap: 256 params -> 32 bytes either way with 8 kept.
  assert accounting.mask_bytes(8, 256) == (32, 'bitmap')
  assert accounting.mask_bytes(7, 256) == (28, 'indices')
  assert accounting.mask_bitmap_bytes(1001) == 126


def test_round_and_exploration_bytes():
  # 3 clients; down = kept values + the mask when sent; up = kept values.
  assert accounting.round_bytes(700, 1000, 3, send_mask=True) == (3 * 2800, 3 * (2800 + 125))
  assert accounting.round_bytes(700, 1000, 3, send_mask=False) == (3 * 2800, 3 * 2800)
  assert accounting.round_bytes(10, 1000, 3, send_mask=True) == (3 * 40, 3 * (40 + 40))
  assert accounting.round_bytes(1000, 1000, 2, send_mask=True) == (8000, 8000)
  assert accounting.exploration_bytes(1000, 4) == (16000, 16000)


def test_round_bytes_hand_computed():
  """(up, down) bytes of a round, float32 values and the cheaper mask encoding, by hand."""
  # 1001 params, 600 kept, 5 clients. Up: 600 values x 4 B = 2400 B a client -> 12000.
  # Down with the mask: 2400 + bitmap ceil(1001 / 8) = 126 (indices would be 600 x 4 = 2400)
  # = 2526 B a client -> 12630. Without the mask: 2400 -> 12000.
  assert accounting.round_bytes(600, 1001, 5, send_mask=True) == (12000, 12630)
  assert accounting.round_bytes(600, 1001, 5, send_mask=False) == (12000, 12000)
  # 10000 params, 250 kept (97.5% sparse), 1 client: up 250 x 4 = 1000. Down: 1000 + the cheaper
  # of indices 250 x 4 = 1000 and bitmap 10000 / 8 = 1250 -> 1000 + 1000 = 2000.
  assert accounting.round_bytes(250, 10000, 1, send_mask=True) == (1000, 2000)
  # 313 kept of 10000: indices 1252 > bitmap 1250 -> down = 1252 + 1250 = 2502 a client; 2 clients.
  assert accounting.round_bytes(313, 10000, 2, send_mask=True) == (2 * 1252, 2 * 2502)
  # FedAvg: everything kept, so no mask is sent even when asked: 4 x 64 = 256 each way, 3 clients.
  assert accounting.round_bytes(64, 64, 3, send_mask=True) == (768, 768)
  # No clients, no bytes.
  assert accounting.round_bytes(600, 1001, 0, send_mask=True) == (0, 0)
  # Exploration: 7 explorers x 1001 dense values x 4 B = 28028 each way.
  assert accounting.exploration_bytes(1001, 7) == (28028, 28028)


def test_param_counts():
  params = {'a': {'kernel': np.zeros((3, 4)), 'bias': np.zeros(4)}}
  mask = {'a': {'kernel': np.eye(3, 4, dtype=bool), 'bias': np.array([1, 0, 1, 1], bool)}}
  assert accounting.total_params(params) == 16
  assert accounting.kept_params(mask) == 6


def test_a_mask_that_removes_units_travels_as_structure_plus_inner_bitmap():
  # 1000 params, 700 kept, whole units removed leave a 720-param shrunk model of 20 units:
  # 3 bytes of unit bits + 90 bytes of inner bitmap beat the 125-byte full bitmap.
  assert accounting.mask_bytes(700, 1000, shrunk=720, units=20) == (93, 'structure')
  assert accounting.mask_bytes(700, 1000, shrunk=1000, units=20) == (125, 'bitmap')
  assert accounting.mask_bytes(10, 1000, shrunk=720, units=20) == (40, 'indices')
  assert accounting.round_bytes(700, 1000, 2, True, shrunk=720, units=20) == (
      2 * 2800, 2 * (2800 + 93))


def test_shrunk_params_counts_the_model_without_its_dead_units():
  from autoflip_jax import masks, shrink  # noqa: PLC0415
  from tests.test_masks import UNITS, _ones  # noqa: PLC0415
  mask = _ones()
  assert shrink.shrunk_params(mask, UNITS) == (sum(np.size(m) for m in jax.tree.leaves(mask)),
                                               2 + 3 + 4)
  mask['conv1']['kernel'][..., 0] = False   # conv1's filter 0 dies: its 50 weights, its bias
  mask = jax.tree.map(np.asarray, masks.structured_mask(mask, UNITS))  # and dense0's 9 rows
  want = sum(np.size(m) for m in jax.tree.leaves(_ones())) - 50 - 1 - 9 * 4
  assert shrink.shrunk_params(mask, UNITS)[0] == want
