"""Tests for autoflip_jax.shrink: the physically smaller model equals the masked full model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from autoflip_jax import accounting, masks, shrink
from autoflip_jax.models.cnn import CNN
from tests.test_models_zoo import SMALL, example_input, random_params


def _guidance(params, seed=3):
  """Random guidance in [0, 1] (already what `masks.normalize` returns)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: rng.uniform(size=p.shape).astype(np.float32), params)


def _masked(params, mask):
  return jax.tree.map(lambda p, m: np.where(m, p, 0.0).astype(p.dtype), params, mask)


def _mask(model, guidance, tp, structured_tp):
  fn = jax.jit(lambda g: masks.hybrid_mask(g, tp, model.units(), structured_tp=structured_tp))
  return jax.tree.map(np.asarray, fn(guidance))


def _apply(model, params, x):
  return np.asarray(jax.jit(lambda p, x: model.apply({'params': p}, x))(params, x))


def _dtype(name):
  return np.int32 if name == 'lstm' else np.float32


@pytest.mark.parametrize('name', list(SMALL))
def test_shrunk_model_computes_the_masked_model(name):
  model, shape = SMALL[name]
  x = example_input(name, batch=3)
  params = random_params(model, x)
  mask = _mask(model, _guidance(params), tp=0.3, structured_tp=0.4)
  counts = masks.unit_counts(mask, model.units())
  # The mask removed units in every unit layer with more than two of them.
  assert all(kept < total for kept, total in counts.values() if total > 2), counts
  small = shrink.shrink(model, params, mask)
  shrink.check_shapes(small, x)
  assert {k: len(v) for k, v in small.kept.items()} == {k: c[0] for k, c in counts.items()}
  want = _apply(model, _masked(params, mask), x)
  got = _apply(small.model, small.params, x)
  np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()))
  # Fewer parameters, and the kept values are the masked full model's: shrinking drops only
  # zeros, so the non-zero values are the same multiset; every entry the shrunk mask prunes is 0.
  assert accounting.total_params(small.params) < accounting.total_params(params)
  nonzero = lambda tree: np.sort(np.concatenate(
      [np.asarray(a).ravel() for a in jax.tree.leaves(tree)]))
  full, shrunk = nonzero(_masked(params, mask)), nonzero(small.params)
  np.testing.assert_array_equal(shrunk[shrunk != 0], full[full != 0])
  for p, m in zip(jax.tree.leaves(small.params), jax.tree.leaves(small.mask)):
    np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], 0.0)
  assert accounting.kept_params(small.mask) == accounting.kept_params(mask)  # all in kept units
  # The structured FLOP count bounds the shrunk model's dense count from below (it also skips
  # input rows that unstructured pruning emptied).
  positions = accounting.kernel_positions(model.apply, params, shape, _dtype(name))
  small_positions = accounting.kernel_positions(small.model.apply, small.params, shape,
                                                _dtype(name))
  assert accounting.flops_per_example(params, mask, positions, 'structured') <= (
      accounting.flops_per_example(small.params, None, small_positions, 'dense'))


@pytest.mark.parametrize('name', ['resnet18', 'lstm'])
def test_structured_flops_are_the_shrunk_models_flops(name):
  # With (almost) no unstructured pruning (tp = 0 prunes one weight per tensor), a kernel's live
  # rows and columns are exactly its live units, so `structured` = the shrunk model's dense count.
  model, shape = SMALL[name]
  x = example_input(name)
  params = random_params(model, x)
  mask = _mask(model, _guidance(params), tp=0.0, structured_tp=0.4)
  small = shrink.shrink(model, params, mask)
  positions = accounting.kernel_positions(model.apply, params, shape, _dtype(name))
  small_positions = accounting.kernel_positions(small.model.apply, small.params, shape,
                                                _dtype(name))
  structured = accounting.flops_per_example(params, mask, positions, 'structured')
  assert structured == accounting.flops_per_example(small.params, None, small_positions, 'dense')
  assert structured < accounting.flops_per_example(params, None, positions, 'dense')


def test_cnn_shrinks_to_hand_known_shapes_and_values():
  """A hand-made mask on a (2, 3)-filter, 4-neuron CNN: conv0 filter 1, conv1 filter 0 and dense0
  neuron 2 dead (kernel slice and bias), plus one unstructured zero in dense0, and dense0 neuron 1
  with no kernel weight but its bias (alive: it outputs relu(0.5)). The shrunk params are the
  masked params sliced by hand, and compute the masked model's outputs."""
  model = CNN(num_classes=3, channels=(2, 3), hidden=4)
  x = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)
  params = jax.tree.map(np.array, random_params(model, x))
  params['dense0']['bias'][1] = 0.5
  m = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
  m['dense0']['kernel'][:, 1] = False           # neuron 1: bias only, still alive
  m['conv0']['kernel'][..., 1] = False
  m['conv0']['bias'][1] = False
  m['conv1']['kernel'][..., 0] = False
  m['conv1']['bias'][0] = False
  m['dense0']['kernel'][:, 2] = False
  m['dense0']['bias'][2] = False
  m['dense0']['kernel'][5, 0] = False           # unstructured: stays, as a zero
  small = shrink.shrink(model, params, m)
  assert small.kept == {'conv0': (0,), 'conv1': (1, 2), 'dense0': (0, 1, 3)}
  p = _masked(params, m)
  # 12 -conv-> 10 -pool-> 6 -conv-> 4 -pool-> 3: dense0 reads 3 x 3 x 3 HWC features, feature i
  # from conv1 channel i % 3; channel 0 is gone, so 18 rows remain.
  rows = [i for i in range(27) if i % 3 != 0]
  want = {'conv0': {'kernel': p['conv0']['kernel'][..., [0]], 'bias': p['conv0']['bias'][[0]]},
          'conv1': {'kernel': p['conv1']['kernel'][:, :, [0]][..., [1, 2]],
                    'bias': p['conv1']['bias'][[1, 2]]},
          'dense0': {'kernel': p['dense0']['kernel'][rows][:, [0, 1, 3]],
                     'bias': p['dense0']['bias'][[0, 1, 3]]},
          'head': {'kernel': p['head']['kernel'][[0, 1, 3]], 'bias': p['head']['bias']}}
  assert jax.tree.map(np.shape, small.params) == {
      'conv0': {'kernel': (5, 5, 1, 1), 'bias': (1,)},
      'conv1': {'kernel': (5, 5, 1, 2), 'bias': (2,)},
      'dense0': {'kernel': (18, 3), 'bias': (3,)},
      'head': {'kernel': (3, 3), 'bias': (3,)}}
  jax.tree.map(np.testing.assert_array_equal, small.params, want)
  # Original row 5 (channel 2) is the 4th kept row: its mask entry and value are still zero.
  assert rows.index(5) == 3
  assert not small.mask['dense0']['kernel'][3, 0] and small.params['dense0']['kernel'][3, 0] == 0
  np.testing.assert_array_equal(small.mask['dense0']['kernel'][:, 1], False)
  assert int(np.sum(~small.mask['dense0']['kernel'])) == 18 + 1
  assert all(np.all(a) for k, a in jax.tree_util.tree_leaves_with_path(small.mask)
             if 'dense0' not in str(k[0]))
  shrink.check_shapes(small, x)
  np.testing.assert_allclose(_apply(small.model, small.params, x), _apply(model, p, x),
                             atol=1e-5)


def test_dense_mask_shrinks_to_the_same_model():
  model, _ = SMALL['cnn']
  x = example_input('cnn')
  params = random_params(model, x)
  small = shrink.shrink(model, params, masks.ones_mask(params))
  assert jax.tree.map(np.shape, small.params) == jax.tree.map(np.shape, params)
  np.testing.assert_allclose(_apply(small.model, small.params, x), _apply(model, params, x),
                             atol=1e-6)


def test_shrinking_twice_keeps_original_indices():
  model = CNN(num_classes=3, channels=(4, 5), hidden=6)
  x = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)
  params = random_params(model, x)
  m = masks.ones_mask(params)
  m = jax.tree.map(np.array, m)
  m['conv0']['kernel'][..., 1] = False
  m = jax.tree.map(np.asarray, masks.structured_mask(m, model.units()))
  first = shrink.shrink(model, params, m)
  assert first.kept['conv0'] == (0, 2, 3)
  m2 = jax.tree.map(np.array, first.mask)
  m2['conv0']['kernel'][..., 0] = False           # original filter 2
  m2['dense0']['kernel'][:, 4] = False
  m2 = jax.tree.map(np.asarray, masks.structured_mask(m2, first.model.units()))
  second = shrink.shrink(first.model, first.params, m2)
  assert second.kept['conv0'] == (2, 3)
  assert second.kept['dense0'] == (0, 1, 2, 3, 5)
  np.testing.assert_allclose(
      _apply(second.model, second.params, x),
      _apply(model, _masked(params, jax.tree.map(np.asarray, _expand(
          model, params, second.kept))), x), atol=1e-5)


def _expand(model, params, kept):
  """The full-size mask that keeps exactly the units in `kept` (helper for the test above)."""
  m = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
  for unit in model.units():
    n = params[unit.kernel[0]]['kernel'].shape[-1]
    keep = np.isin(np.arange(n), kept[unit.name])
    m[unit.kernel[0]]['kernel'] &= keep
  return masks.structured_mask(m, model.units())


def test_a_layer_with_every_unit_removed_shrinks_to_width_zero():
  model = CNN(num_classes=3, channels=(2, 3), hidden=4)
  x = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype(np.float32)
  params = random_params(model, x)
  m = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
  m['dense0']['kernel'][:] = False
  m = jax.tree.map(np.asarray, masks.structured_mask(m, model.units()))
  small = shrink.shrink(model, params, m)
  assert small.kept['dense0'] == ()
  assert small.params['head']['kernel'].shape == (0, 3)
  out = _apply(small.model, small.params, x)
  np.testing.assert_allclose(out, np.broadcast_to(params['head']['bias'], out.shape), atol=1e-6)
  np.testing.assert_allclose(out, _apply(model, _masked(params, m), x), atol=1e-6)


def test_overlapping_unit_declarations_are_rejected():
  model = CNN(num_classes=3, channels=(2, 3), hidden=4)
  params = random_params(model, np.zeros((1, 12, 12, 1), np.float32))

  class Twice(CNN):
    def units(self):
      units = CNN.units(self)
      return units + (units[0]._replace(name='again'),)

  with pytest.raises(ValueError, match=r'conv0.*belongs to two units \(second: again\)'):
    shrink.shrink(Twice(num_classes=3, channels=(2, 3), hidden=4), params,
                  masks.ones_mask(params))
  # The same params and mask with the model's own units shrink fine (to the same sizes).
  small = shrink.shrink(model, params, masks.ones_mask(params))
  assert jax.tree.map(np.shape, small.params) == jax.tree.map(np.shape, params)
