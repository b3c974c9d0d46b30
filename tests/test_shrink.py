"""Tests for autoflip_jax.shrink: the physically smaller model equals the masked full model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import accounting, federated, masks, shrink
from autoflip_jax import server as server_lib
from autoflip_jax.models import layers
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


def _round_inputs(name, model, clients=2, steps=2, batch=3, variants=2):
  """Two variants' params, masks (different units removed) and a shared cohort."""
  x = example_input(name, batch=clients * steps * batch)
  classes = 7 if name == 'lstm' else 5
  y = np.random.default_rng(5).integers(0, classes, x.shape[0]).astype(np.int32)
  data = federated.local.ClientData(
      x.reshape((clients, steps, batch) + x.shape[1:]), y.reshape(clients, steps, batch),
      np.ones((clients, steps, batch), bool))
  params = [random_params(model, x[:1], seed=s) for s in range(variants)]
  guidance = _guidance(params[0])
  mask_list = [_mask(model, guidance, tp=0.2 + 0.1 * s, structured_tp=0.3 + 0.1 * s)
               for s in range(variants)]
  return data, params, mask_list


@pytest.mark.parametrize('name', list(SMALL))
def test_a_shrunk_round_equals_the_masked_full_round(name):
  # Two rounds of two variants with different masks (the plan keeps the union of their units;
  # one variant for the two slow-to-compile models) and FedAvgM on the server (its momentum is
  # sliced and put back too). SGD on the clients: Adam's division by tiny second moments would
  # turn float rounding into visible differences.
  model, _ = SMALL[name]
  k = 2 if name in ('cnn', 'lstm') else 1
  data, params, mask_list = _round_inputs(name, model, variants=k)
  tx = server_lib.make('momentum', learning_rate=0.5)
  state = lambda: federated.ServerState(
      federated.stack(params), federated.stack(mask_list), jnp.zeros((k,), jnp.int32),
      federated.stack([server_lib.init(tx, p) for p in params]))
  union = jax.tree.map(lambda *ms: np.any(ms, axis=0), *mask_list)
  # Aligned to 4 units a layer (the runner's 8 on a CPU): some dead units stay in, at zero.
  plan = shrink.plan(model, union, align=4)
  assert plan.removes_any
  alive = shrink.plan(model, union).kept
  assert any(len(plan.kept[n]) > len(alive[n]) for n in alive)
  assert all(len(i) % 4 == 0 or len(i) == plan.sizes[n] for n, i in plan.kept.items())
  kwargs = dict(num_variants=k, optimizer='sgd', local_epochs=1, server_tx=tx,
                variants_per_chunk=1)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  full = federated.make_variant_round_fn(apply_fn, **kwargs)
  small = federated.make_variant_round_fn(apply_fn, shrink_plan=plan, params_like=params[0],
                                          **kwargs)
  args = (data, jnp.array([6, 5]), jnp.array([0, 1]),
          jnp.stack([jax.random.key(s) for s in range(k)]), jnp.float32(0.05), None)
  want, _ = full(state(), *args)
  want, want_m = full(want, *args)
  got, _ = small(state(), *args)
  got, got_m = small(got, *args)
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                  atol=1e-5)
  jax.tree.map(close, got.params, want.params)
  jax.tree.map(close, got.server_opt, want.server_opt)
  jax.tree.map(np.testing.assert_array_equal, got.mask, want.mask)
  close(got_m.client_loss, want_m.client_loss)
  np.testing.assert_array_equal(got.round, [2] * k)
  with pytest.raises(ValueError, match='fixed mask'):
    federated.make_variant_round_fn(apply_fn, shrink_plan=plan, params_like=params[0],
                                    track_grad_sq=True, **kwargs)


def test_take_and_put_invert_each_other_on_masked_trees():
  model, _ = SMALL['resnet18']
  x = example_input('resnet18')
  params = random_params(model, x)
  mask = _mask(model, _guidance(params), tp=0.3, structured_tp=0.4)
  plan = shrink.plan(model, mask)
  masked = _masked(params, mask)
  small = shrink.take(masked, plan, params)
  np.testing.assert_equal(jax.tree.map(np.shape, small),
                          jax.tree.map(np.shape, shrink.shrink(model, params, mask).params))
  back = shrink.put(jax.tree.map(jnp.asarray, small), masked, plan, params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), back, masked)


def test_a_whole_run_on_shrunk_rounds_equals_masked_full_rounds(tmp_path):
  """EFLPrune (a mask before round 1, a new one after round 1): the same rows whether the rounds
  train the shrunk or the masked full model; one compiled round per distinct shrunk shape.
  (AutoFLIP's fixed mask is the simpler case: the rounds above, and tests/test_variants.py.)"""
  from autoflip_jax import train  # noqa: PLC0415
  from tests.helpers import tiny_config  # noqa: PLC0415
  from tests.test_variants import FLOATS, SMALL as RUN, _rows  # noqa: PLC0415
  # Wide enough that removed units survive the CPU's alignment to 8 units a layer.
  run = dict(RUN, algorithm='eflprune', eflprune_interval=1, eflprune_steps=2,
             model_config={'channels': (16, 32), 'hidden': 64})
  made = []
  make = federated.make_variant_round_fn
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(federated, 'make_variant_round_fn',
                  lambda *a, **k: made.append((k['shrink_plan'], make(*a, **k))) or made[-1][1])
    train.train_and_evaluate(tiny_config(**run), str(tmp_path / 'shrunk'))
  train.train_and_evaluate(tiny_config(**run, shrunk_rounds=False), str(tmp_path / 'full'))
  # EFLPrune's two masks (before round 1, after round 1) each removed units.
  assert len(made) == 2 and all(p is not None and fn._cache_size() == 1 for p, fn in made)
  assert made[0][0].key != made[1][0].key
  align = layers.unit_alignment()
  assert all(len(i) % align == 0 for p, _ in made for i in p.kept.values())
  got, want = _rows(tmp_path / 'shrunk'), _rows(tmp_path / 'full')
  assert len(got) == len(want) == 4
  for g, w in zip(got, want):
    assert {k: v for k, v in g.items() if k not in FLOATS} == {
        k: v for k, v in w.items() if k not in FLOATS}
    for k in FLOATS:
      if w[k] is not None:
        np.testing.assert_allclose(g[k], w[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize('name', ['resnet18', 'efficientnet_b3'])
def test_live_norm_statistics_shrink_exactly_and_ignore_removed_channels(name):
  # `norm_statistics='live'`: the shrunk model still computes the masked model, the unpruned
  # model is the usual GroupNorm, and the pruned model differs from the 'zeros' one (the removed
  # channels no longer dilute their groups).
  base, _ = SMALL[name]
  live = base.clone(norm_statistics='live')
  base = base.clone(norm_statistics='zeros')
  x = example_input(name, batch=3)
  params = random_params(base, x)
  np.testing.assert_allclose(_apply(live, params, x), _apply(base, params, x), rtol=1e-5,
                             atol=1e-5)
  mask = _mask(live, _guidance(params), tp=0.3, structured_tp=0.4)
  small = shrink.shrink(live, params, mask)
  want = _apply(live, _masked(params, mask), x)
  got = _apply(small.model, small.params, x)
  np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()))
  assert not np.allclose(want, _apply(base, _masked(params, mask), x), atol=1e-4)


def test_live_group_norm_is_the_group_norm_of_the_live_channels():
  from autoflip_jax.models import layers  # noqa: PLC0415
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 8)).astype(np.float32))
  removed = np.array([1, 5, 6])
  scale = jnp.ones(8).at[removed].set(0.0)
  x = x.at[..., removed].set(0.0)
  out = np.asarray(layers.group_norm(x, scale, jnp.zeros(8), tuple(range(8)), 4, 2, 1e-5, True))
  np.testing.assert_array_equal(out[..., removed], 0.0)
  for live in ([0, 2, 3], [4, 7]):  # the live channels of each group of 4
    g = np.asarray(x)[..., live]
    m, v = g.mean(axis=(1, 2, 3), keepdims=True), g.var(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out[..., live], (g - m) / np.sqrt(v + 1e-5), atol=1e-5)
  keep = (0, 2, 3, 4, 7)
  small = layers.group_norm(x[..., np.array(keep)], scale[np.array(keep)], jnp.zeros(5), keep, 4,
                            2, 1e-5, True)
  np.testing.assert_allclose(np.asarray(small), out[..., np.array(keep)], atol=1e-6)


def test_an_aligned_plan_tops_the_alive_units_up_with_dead_ones():
  """`align`: every unit layer keeps a multiple of that many units (the first dead ones fill
  up), and a layer never exceeds its size."""
  from autoflip_jax.shrink import _aligned
  alive = np.zeros(32, bool)
  alive[[1, 4, 5, 9, 20, 30]] = True
  np.testing.assert_array_equal(_aligned(alive, 8), [0, 1, 2, 4, 5, 9, 20, 30])
  np.testing.assert_array_equal(_aligned(alive, 1), [1, 4, 5, 9, 20, 30])
  few = np.array([True, False, True])
  np.testing.assert_array_equal(_aligned(few, 8), [0, 1, 2])  # all of them, not more
  np.testing.assert_array_equal(_aligned(np.ones(16, bool), 8), np.arange(16))
