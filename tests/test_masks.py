"""Tests for autoflip_jax.masks: the hybrid pruning mask (AUTOFLIP.md §2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import masks
from autoflip_jax.models.cnn import CNN
from autoflip_jax.models.lstm import LSTM

# A tiny CNN: 12x12x1 -> conv0 (5,5,1,2) -> 6x6 -> conv1 (5,5,2,3) -> 3x3x3 = 27 -> dense0 (27,4)
# -> head (4,3).
MODEL = CNN(num_classes=3, channels=(2, 3), hidden=4)
UNITS = MODEL.units()
SHAPES = {'conv0': ((5, 5, 1, 2), (2,)), 'conv1': ((5, 5, 2, 3), (3,)),
          'dense0': ((27, 4), (4,)), 'head': ((4, 3), (3,))}


def _tree(fill):
  """A params-shaped dict of numpy arrays from `fill(shape)`."""
  return {name: {'kernel': fill(k), 'bias': fill(b)} for name, (k, b) in SHAPES.items()}


def _ones():
  return _tree(lambda s: np.ones(s, bool))


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def test_tiny_model_shapes_match():
  params = jax.eval_shape(MODEL.init, jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))['params']
  assert jax.tree.map(lambda p: p.shape, params) == jax.tree.map(lambda p: p.shape,
                                                                  _tree(np.zeros))


# --- Stage 1: unstructured -------------------------------------------------------------------

GUIDE = {
    'a': {'kernel': np.array([[0.1, 0.5], [0.9, 0.3]], np.float32),
          'bias': np.array([0.0, 0.0], np.float32)},
    'b': {'kernel': np.array([[0.2], [0.7], [0.4]], np.float32),
          'bias': np.array([0.0], np.float32)},
}


def test_unstructured_mask_hand_computed():
  flat = np.array([0.1, 0.5, 0.9, 0.3, 0.2, 0.7, 0.4])
  assert np.quantile(flat, 0.5) == pytest.approx(0.4)
  m = _np(masks.unstructured_mask(GUIDE, 0.5))
  np.testing.assert_array_equal(m['a']['kernel'], [[False, True], [True, False]])
  np.testing.assert_array_equal(m['b']['kernel'], [[False], [True], [False]])
  # tp = 0.3: linear quantile at position 0.3 * 6 = 1.8 -> 0.2 + 0.8 * 0.1 = 0.28.
  assert np.quantile(flat, 0.3) == pytest.approx(0.28)
  np.testing.assert_allclose(masks.threshold(GUIDE, 0.3), 0.28, atol=1e-6)
  m = _np(masks.unstructured_mask(GUIDE, 0.3))
  np.testing.assert_array_equal(m['a']['kernel'], [[False, True], [True, True]])
  np.testing.assert_array_equal(m['b']['kernel'], [[False], [True], [True]])
  # Biases are never pruned by stage 1, whatever their guidance (here 0, below every threshold).
  for tp in (0.3, 0.5, 0.99):
    m = _np(masks.unstructured_mask(GUIDE, tp))
    np.testing.assert_array_equal(m['a']['bias'], True)
    np.testing.assert_array_equal(m['b']['bias'], True)
    assert m['a']['bias'].dtype == bool


def test_unstructured_threshold_is_global_not_per_layer():
  g = {'a': {'kernel': np.full((2, 2), 0.1, np.float32) + np.arange(4).reshape(2, 2) * 0.01},
       'b': {'kernel': np.full((2, 2), 0.8, np.float32) + np.arange(4).reshape(2, 2) * 0.01}}
  m = _np(masks.unstructured_mask(g, 0.5))
  # Per layer, half of each would go; globally, layer a (all small) goes and layer b stays.
  np.testing.assert_array_equal(m['a']['kernel'], False)
  np.testing.assert_array_equal(m['b']['kernel'], True)


def test_unstructured_ties_at_threshold_are_all_pruned():
  # 7 of 10 weights never moved (guidance 0). quantile(G, 0.3) = 0 and keep needs g > 0, so all
  # 7 tied zeros go: 70% sparsity at tp = 0.3.
  g = {'w': {'kernel': np.array([[0, 0, 0, 0, 0], [0, 0, 0.2, 0.5, 1.0]], np.float32)}}
  assert np.quantile(g['w']['kernel'], 0.3) == 0.0
  m = _np(masks.unstructured_mask(g, 0.3))
  np.testing.assert_array_equal(m['w']['kernel'],
                                [[False] * 5, [False, False, True, True, True]])
  assert 1.0 - m['w']['kernel'].mean() == pytest.approx(0.7)
  # Ties in the middle: every weight equal to the quantile is pruned.
  g = {'w': {'kernel': np.array([[0.1, 0.5, 0.5], [0.5, 0.5, 0.9]], np.float32)}}
  m = _np(masks.unstructured_mask(g, 0.5))
  np.testing.assert_array_equal(m['w']['kernel'], [[False] * 3, [False, False, True]])


# --- normalize -------------------------------------------------------------------------------

def test_normalize_minmax():
  g = {'a': jnp.array([[2.0, 4.0], [6.0, 10.0]]), 'b': jnp.array([3.0, 3.0, 3.0]),
       'c': jnp.array([-1.0, 1.0])}
  n = _np(masks.normalize(g, 'minmax'))
  np.testing.assert_allclose(n['a'], [[0.0, 0.25], [0.5, 1.0]], atol=1e-7)
  np.testing.assert_array_equal(n['b'], [0.0, 0.0, 0.0])  # constant tensor -> 0, not NaN
  np.testing.assert_allclose(n['c'], [0.0, 1.0])
  for k in ('a', 'c'):
    assert n[k].min() == 0.0 and n[k].max() == 1.0
  # Default method is minmax.
  np.testing.assert_allclose(_np(masks.normalize(g))['a'], n['a'])


def test_normalize_robust():
  g = {'a': jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]), 'b': jnp.array([7.0, 7.0, 7.0])}
  n = _np(masks.normalize(g, 'robust'))
  # median 3, q1 2, q3 4 -> IQR 2.
  np.testing.assert_allclose(n['a'], [-1.0, -0.5, 0.0, 0.5, 1.0], atol=1e-6)
  # IQR 0 is treated as 1: the median maps to 0, nothing is NaN.
  np.testing.assert_array_equal(n['b'], [0.0, 0.0, 0.0])


def test_normalize_unknown_method_raises():
  with pytest.raises(ValueError, match='zscore'):
    masks.normalize({'a': jnp.ones(3)}, 'zscore')


# --- Stage 2: structured ---------------------------------------------------------------------

def test_structured_removes_unit_bias_and_consumer_slices():
  m = _ones()
  m['conv0']['kernel'][..., 1] = False          # conv0 filter 1: every incoming weight pruned
  m['conv1']['kernel'][..., 2] = False          # conv1 filter 2: every incoming weight pruned
  out = _np(masks.structured_mask(m, UNITS))
  # conv0 filter 1: its bias and conv1's input channel 1 go.
  np.testing.assert_array_equal(out['conv0']['bias'], [True, False])
  np.testing.assert_array_equal(out['conv0']['kernel'][..., 0], True)
  np.testing.assert_array_equal(out['conv1']['kernel'][:, :, 1, :], False)
  # conv1 filter 2 -> bias and dense0 rows i with i % 3 == 2 (HWC flatten).
  np.testing.assert_array_equal(out['conv1']['bias'], [True, True, False])
  rows = np.arange(27)
  np.testing.assert_array_equal(out['dense0']['kernel'][rows % 3 == 2], False)
  np.testing.assert_array_equal(out['dense0']['kernel'][rows % 3 != 2], True)
  # conv1 filters 0, 1 keep their weights from conv0 filter 0.
  np.testing.assert_array_equal(out['conv1']['kernel'][:, :, 0, :2], True)
  # Nothing else changed.
  np.testing.assert_array_equal(out['dense0']['bias'], True)
  np.testing.assert_array_equal(out['head']['kernel'], True)
  np.testing.assert_array_equal(out['head']['bias'], True)
  assert masks.unit_counts(out, UNITS) == {'conv0': (1, 2), 'conv1': (2, 3), 'dense0': (4, 4)}


def test_structured_threshold_share():
  m = _ones()
  m['conv0']['kernel'][..., 0] = False
  m['conv0']['kernel'][2, 2, 0, 0] = True       # filter 0: 24 of 25 pruned
  # conv1: filter 0 exactly half (25 of 50) pruned; filter 1 24 of 50 pruned.
  m['conv1']['kernel'][:, :, 1, 0] = False
  m['conv1']['kernel'][:, :, 1, 1] = False
  m['conv1']['kernel'][0, 0, 1, 1] = True
  # Threshold 1.0: only fully pruned units go, so nothing goes.
  out = _np(masks.structured_mask(m, UNITS, structured_threshold=1.0))
  np.testing.assert_array_equal(out['conv0']['kernel'], m['conv0']['kernel'])
  np.testing.assert_array_equal(out['conv0']['bias'], True)
  np.testing.assert_array_equal(out['conv1']['bias'], True)
  # Threshold 0.5: conv0 filter 0 (share 0.96) goes; conv1 filter 0 (share exactly 0.5) goes;
  # conv1 filter 1 keeps 26 of 50 at first, but removing conv0 filter 0 prunes its input channel
  # 0 too (another 25 weights), so its share becomes 49/50 and it goes as well: cascade.
  out = _np(masks.structured_mask(m, UNITS, structured_threshold=0.5))
  np.testing.assert_array_equal(out['conv0']['bias'], [False, True])
  np.testing.assert_array_equal(out['conv0']['kernel'][..., 0], False)
  # conv1 filter 2 lost channel 0 only (share exactly 0.5): also removed at 0.5. With every
  # conv1 filter gone, every dense0 neuron has lost all its inputs and goes too; classes stay.
  np.testing.assert_array_equal(out['conv1']['bias'], [False, False, False])
  np.testing.assert_array_equal(out['dense0']['bias'], False)
  np.testing.assert_array_equal(out['head']['kernel'], False)
  np.testing.assert_array_equal(out['head']['bias'], True)
  assert masks.unit_counts(out, UNITS) == {'conv0': (1, 2), 'conv1': (0, 3), 'dense0': (0, 4)}
  m2 = _ones()
  m2['conv1']['kernel'][:, :, 1, 1] = False
  m2['conv1']['kernel'][0, 0, 1, 1] = True      # 24 of 50 pruned: survives 0.5
  out2 = _np(masks.structured_mask(m2, UNITS, structured_threshold=0.5))
  np.testing.assert_array_equal(out2['conv1']['bias'], True)
  m2['conv1']['kernel'][0, 0, 1, 1] = False     # 25 of 50: removed
  out2 = _np(masks.structured_mask(m2, UNITS, structured_threshold=0.5))
  np.testing.assert_array_equal(out2['conv1']['bias'], [True, False, True])


def test_structured_cascade_through_layers():
  m = _ones()
  m['conv0']['kernel'][..., 1] = False          # conv0 filter 1 removed
  m['conv1']['kernel'][:, :, 0, 0] = False      # conv1 filter 0 lives only on conv0 filter 1
  rows = np.arange(27)
  m['dense0']['kernel'][rows % 3 != 0, 3] = False  # dense0 neuron 3 lives only on conv1 filter 0
  out = _np(masks.structured_mask(m, UNITS))
  np.testing.assert_array_equal(out['conv0']['bias'], [True, False])
  np.testing.assert_array_equal(out['conv1']['bias'], [False, True, True])
  np.testing.assert_array_equal(out['conv1']['kernel'][..., 0], False)
  np.testing.assert_array_equal(out['dense0']['kernel'][rows % 3 == 0], False)
  np.testing.assert_array_equal(out['dense0']['bias'], [True, True, True, False])
  np.testing.assert_array_equal(out['dense0']['kernel'][:, 3], False)
  np.testing.assert_array_equal(out['head']['kernel'][3], False)
  np.testing.assert_array_equal(out['head']['kernel'][:3], True)
  assert masks.unit_counts(out, UNITS) == {'conv0': (1, 2), 'conv1': (2, 3), 'dense0': (3, 4)}


def test_structured_never_removes_classes():
  m = _ones()
  m['head']['kernel'][:, 1] = False             # class 1: every incoming weight pruned
  out = _np(masks.structured_mask(m, UNITS, structured_threshold=0.5))
  np.testing.assert_array_equal(out['head']['bias'], True)
  np.testing.assert_array_equal(out['head']['kernel'], m['head']['kernel'])
  np.testing.assert_array_equal(out['dense0']['bias'], True)
  # Even if the whole head kernel is pruned, the head bias (the class outputs) stays.
  m['head']['kernel'][:] = False
  out = _np(masks.structured_mask(m, UNITS))
  np.testing.assert_array_equal(out['head']['bias'], True)


def test_structured_tp_removes_lowest_score_units():
  g = _tree(lambda s: np.zeros(s, np.float32))
  g['conv0']['kernel'][..., :] = [0.1, 0.9]
  g['conv1']['kernel'][..., :] = [0.3, 0.2, 0.8]
  g['dense0']['kernel'][...] = [0.4, 0.1, 0.6, 0.9]
  out = _np(masks.structured_mask(_ones(), UNITS, guidance=g, structured_tp=0.5))
  # conv0: quantile([.1, .9], .5) = .5 -> filter 0 goes. conv1: median .3 -> only .2 goes
  # (strictly below). dense0: quantile .5 of [.1 .4 .6 .9] = .5 -> neurons 0 and 1 go.
  np.testing.assert_array_equal(out['conv0']['bias'], [False, True])
  np.testing.assert_array_equal(out['conv1']['bias'], [True, False, True])
  np.testing.assert_array_equal(out['dense0']['bias'], [False, False, True, True])
  np.testing.assert_array_equal(out['conv1']['kernel'][:, :, 0, :], False)
  np.testing.assert_array_equal(out['head']['kernel'][:2], False)
  np.testing.assert_array_equal(out['head']['kernel'][2:], True)
  with pytest.raises(ValueError, match='guidance'):
    masks.structured_mask(_ones(), UNITS, structured_tp=0.5)


def test_global_scope_cuts_every_unit_at_one_quantile_but_keeps_each_layers_best():
  g = _tree(lambda s: np.zeros(s, np.float32))
  g['conv0']['kernel'][..., :] = [0.1, 0.2]
  g['conv1']['kernel'][..., :] = [0.3, 0.25, 0.8]
  g['dense0']['kernel'][...] = [0.4, 0.9, 0.6, 0.7]
  out = _np(masks.structured_mask(_ones(), UNITS, guidance=g, structured_tp=0.5,
                                  scope='global'))
  # The 9 scores' median is 0.4: conv0's .1 goes, its .2 (the layer's best) stays; conv1's .3
  # and .25 go; dense0's .4 is not strictly below the cut and stays.
  np.testing.assert_array_equal(out['conv0']['bias'], [False, True])
  np.testing.assert_array_equal(out['conv1']['bias'], [False, False, True])
  np.testing.assert_array_equal(out['dense0']['bias'], True)
  with pytest.raises(ValueError, match='scope'):
    masks.structured_mask(_ones(), UNITS, guidance=g, structured_tp=0.5, scope='model')


def test_structured_quantile_follows_a_traced_tp():
  g = masks.normalize(_tree(lambda s: np.asarray(
      jax.random.uniform(jax.random.key(s[-1] + len(s)), s), np.float32)))
  fn = jax.jit(lambda g, tp: masks.hybrid_mask(g, tp, UNITS, structured_tp=tp))
  for tp in (0.3, 0.6):
    for a, b in zip(jax.tree.leaves(_np(fn(g, tp))),
                    jax.tree.leaves(_np(masks.hybrid_mask(g, tp, UNITS, structured_tp=tp)))):
      np.testing.assert_array_equal(a, b)
  assert np.sum(_np(fn(g, 0.6))['dense0']['bias']) < np.sum(_np(fn(g, 0.3))['dense0']['bias'])


def test_hybrid_mask_jit_equals_eager():
  g = masks.normalize(_tree(lambda s: np.asarray(
      jax.random.uniform(jax.random.PRNGKey(sum(s)), s) ** 3)))
  eager = _np(masks.hybrid_mask(g, 0.4, UNITS, structured_threshold=0.8, structured_tp=0.25))
  jitted = _np(jax.jit(lambda g: masks.hybrid_mask(
      g, 0.4, UNITS, structured_threshold=0.8, structured_tp=0.25))(g))
  assert jax.tree.structure(eager) == jax.tree.structure(jitted)
  jax.tree.map(np.testing.assert_array_equal, eager, jitted)
  # tp may also be traced (per-round masks inside the jitted round).
  traced = _np(jax.jit(lambda g, tp: masks.hybrid_mask(
      g, tp, UNITS, structured_threshold=0.8, structured_tp=0.25))(g, 0.4))
  jax.tree.map(np.testing.assert_array_equal, eager, traced)
  # Hybrid = stage 1 then stage 2, and it is never denser than stage 1.
  s1 = _np(masks.unstructured_mask(g, 0.4))
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(s1)):
    assert a.dtype == bool and not np.any(a & ~b)
  # Something was pruned in stage 2 beyond stage 1.
  assert sum(int(a.sum()) for a in jax.tree.leaves(eager)) < sum(
      int(b.sum()) for b in jax.tree.leaves(s1))


def test_apply_mask_exact_zeros_even_for_nan_and_inf():
  p = {'k': jnp.array([[jnp.nan, 1.5], [jnp.inf, -jnp.inf]]), 'b': jnp.array([jnp.nan, 2.0])}
  m = {'k': jnp.array([[False, True], [False, True]]), 'b': jnp.array([False, True])}
  out = _np(masks.apply_mask(p, m))
  np.testing.assert_array_equal(out['k'], [[0.0, 1.5], [0.0, -np.inf]])
  np.testing.assert_array_equal(out['b'], [0.0, 2.0])
  assert not np.signbit(out['k'][0, 0])
  assert out['k'].dtype == np.float32


def test_ones_mask():
  m = _np(masks.ones_mask({'a': jnp.zeros((2, 3)), 'b': jnp.zeros(4)}))
  assert m['a'].shape == (2, 3) and m['a'].dtype == bool and m['a'].all() and m['b'].all()


def test_unit_counts_numbers():
  m = _ones()
  m['conv0']['kernel'][..., 0] = False
  m['conv0']['kernel'][1, 1, 0, 0] = True       # one live weight: still alive
  m['dense0']['kernel'][:, 1:3] = False         # neurons 1, 2 dead
  assert masks.unit_counts(m, UNITS) == {'conv0': (2, 2), 'conv1': (3, 3), 'dense0': (2, 4)}
  m['conv1']['kernel'][:] = False
  assert masks.unit_counts(m, UNITS) == {'conv0': (2, 2), 'conv1': (0, 3), 'dense0': (2, 4)}


# --- Generalised units: several producer kernels, fused gates (LSTM) --------------------------

# LSTM(vocab 5, embed 3, hidden (2, 2), 3 classes). A unit u of layer l owns gate columns
# {u, 2 + u, 4 + u, 6 + u} of both kernels and the bias, recurrent row u and the next input row u.
LSTM_MODEL = LSTM(num_classes=3, vocab_size=5, embed=3, hidden=(2, 2))
LSTM_UNITS = LSTM_MODEL.units()
LSTM_SHAPES = {'embed': {'embedding': (5, 3)},
               'lstm0': {'input_kernel': (3, 8), 'recurrent_kernel': (2, 8), 'bias': (8,)},
               'lstm1': {'input_kernel': (2, 8), 'recurrent_kernel': (2, 8), 'bias': (8,)},
               'head': {'kernel': (2, 3), 'bias': (3,)}}


def _lstm_ones():
  return jax.tree.map(lambda s: np.ones(s, bool), LSTM_SHAPES,
                      is_leaf=lambda s: isinstance(s, tuple))


def test_lstm_tree_matches_the_model():
  params = jax.eval_shape(LSTM_MODEL.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 4), jnp.int32))['params']
  assert jax.tree.map(lambda p: p.shape, params) == LSTM_SHAPES
  assert [(u.name, u.groups) for u in LSTM_UNITS] == [('lstm0', 4), ('lstm1', 4)]


def test_structured_removes_an_lstm_unit_with_its_gates_rows_and_bias():
  m = _lstm_ones()
  gates_of_1 = [1, 3, 5, 7]
  m['lstm0']['input_kernel'][:, gates_of_1] = False
  m['lstm0']['recurrent_kernel'][:, gates_of_1] = False
  out = _np(masks.structured_mask(m, LSTM_UNITS))
  np.testing.assert_array_equal(out['lstm0']['bias'], [True, False] * 4)
  np.testing.assert_array_equal(out['lstm0']['recurrent_kernel'][1], False)   # row 1
  np.testing.assert_array_equal(out['lstm0']['recurrent_kernel'][0, [0, 2, 4, 6]], True)
  np.testing.assert_array_equal(out['lstm1']['input_kernel'][1], False)       # next layer row 1
  np.testing.assert_array_equal(out['lstm1']['input_kernel'][0], True)
  np.testing.assert_array_equal(out['lstm1']['bias'], True)
  np.testing.assert_array_equal(out['head']['kernel'], True)
  assert masks.unit_counts(out, LSTM_UNITS) == {'lstm0': (1, 2), 'lstm1': (2, 2)}
  # The last layer's unit takes the head's input row with it; classes stay.
  m = _lstm_ones()
  m['lstm1']['input_kernel'][:, [0, 2, 4, 6]] = False
  m['lstm1']['recurrent_kernel'][:, [0, 2, 4, 6]] = False
  out = _np(masks.structured_mask(m, LSTM_UNITS))
  np.testing.assert_array_equal(out['head']['kernel'][0], False)
  np.testing.assert_array_equal(out['head']['kernel'][1], True)
  np.testing.assert_array_equal(out['head']['bias'], True)
  np.testing.assert_array_equal(out['lstm1']['recurrent_kernel'][0], False)


def test_lstm_unit_share_counts_both_kernels():
  # Unit 1 of lstm0 owns 3 x 4 = 12 input-kernel and 2 x 4 = 8 recurrent weights. Pruning only
  # its input columns leaves 8 of 20: share 0.6. Pruning one gate column in both leaves it alive.
  m = _lstm_ones()
  m['lstm0']['input_kernel'][:, [1, 3, 5, 7]] = False
  assert _np(masks.structured_mask(m, LSTM_UNITS))['lstm0']['bias'].all()
  assert _np(masks.structured_mask(m, LSTM_UNITS, structured_threshold=0.61))['lstm0'][
      'bias'].all()
  out = _np(masks.structured_mask(m, LSTM_UNITS, structured_threshold=0.6))
  np.testing.assert_array_equal(out['lstm0']['bias'], [True, False] * 4)
  # unit_counts: alive while any of its gate columns in either kernel is.
  assert masks.unit_counts(m, LSTM_UNITS)['lstm0'] == (2, 2)
  m['lstm0']['recurrent_kernel'][:, [1, 3, 5, 7]] = False
  m['lstm0']['recurrent_kernel'][1, 5] = True               # gate g, unit 1: one live weight
  assert masks.unit_counts(m, LSTM_UNITS)['lstm0'] == (2, 2)
  m['lstm0']['recurrent_kernel'][1, 5] = False
  assert masks.unit_counts(m, LSTM_UNITS)['lstm0'] == (1, 2)


def test_lstm_structured_tp_scores_a_unit_over_all_its_gates():
  g = jax.tree.map(lambda s: np.zeros(s, np.float32), LSTM_SHAPES,
                   is_leaf=lambda s: isinstance(s, tuple))
  # Unit 0 of lstm0: high guidance on its input gates only; unit 1: medium everywhere.
  g['lstm0']['input_kernel'][:, [0, 2, 4, 6]] = 1.0        # 12 of 20 weights at 1: mean 0.6
  g['lstm0']['input_kernel'][:, [1, 3, 5, 7]] = 0.5
  g['lstm0']['recurrent_kernel'][:, [1, 3, 5, 7]] = 0.5    # mean 0.5
  g['lstm1']['input_kernel'][:] = 0.3
  g['lstm1']['recurrent_kernel'][:, [0, 2, 4, 6]] = 0.9    # lstm1 unit 0 scores higher
  out = _np(masks.structured_mask(_lstm_ones(), LSTM_UNITS, guidance=g, structured_tp=0.5))
  np.testing.assert_array_equal(out['lstm0']['bias'], [True, False] * 4)
  np.testing.assert_array_equal(out['lstm1']['bias'], [True, False] * 4)
  np.testing.assert_array_equal(out['head']['kernel'][1], False)
  jitted = _np(jax.jit(lambda g: masks.hybrid_mask(g, 0.2, LSTM_UNITS, structured_tp=0.5))(g))
  eager = _np(masks.hybrid_mask(g, 0.2, LSTM_UNITS, structured_tp=0.5))
  jax.tree.map(np.testing.assert_array_equal, jitted, eager)
