"""Each baseline's defining property: the controls' exact sparsity, PruneFL's ratio search and its
interval, EFLPrune's unit rule and schedule, and resuming an algorithm that keeps `extra` state."""

from __future__ import annotations

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import accounting, algorithms, federated, masks, models, train
from autoflip_jax.algorithms import controls, eflprune, prunefl
from autoflip_jax.config_checks import validate_config
from tests.helpers import tiny_config

RUN = dict(algorithm='prunefl,eflprune', num_rounds=5, prunefl_interval=2, prunefl_init_steps=2,
           eflprune_interval=2, eflprune_steps=2, checkpoint_every=3,
           **{'data.max_test_examples': 200})


def _rows(workdir, algorithm=None):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [r for r in rows if algorithm in (None, r['algorithm'])]


def _params():
  """A kernel with hand-picked magnitudes (ties included) and a bias."""
  return {'a': {'kernel': jnp.array([[0.5, -0.9], [0.2, 0.9]]), 'bias': jnp.array([0.0, 7.0])},
          'b': {'kernel': jnp.array([[[-0.2, 0.1, 0.7]]])}}


def test_magnitude_mask_keeps_the_largest_weights_ties_to_lower_index():
  params = _params()
  mask = controls.magnitude_mask(params, 4)
  # |kernel| in flat order: a: .5 .9 .2 .9, b: .2 .1 .7 -> keep .9 .9 .7 .5; the bias never pruned.
  np.testing.assert_array_equal(mask['a']['kernel'], [[True, True], [False, True]])
  np.testing.assert_array_equal(mask['b']['kernel'], [[[False, False, True]]])
  assert mask['a']['bias'].all()
  # Of the two .2 weights tied for the 5th place, the one with the lower flat index (a) wins.
  mask5 = controls.magnitude_mask(params, 5)
  assert bool(mask5['a']['kernel'][1, 0]) and not bool(mask5['b']['kernel'][0, 0, 0])


@pytest.mark.parametrize('kept', [0, 1, 3, 7])
def test_random_mask_has_exactly_the_requested_kernel_count(kept):
  params = _params()
  key = jax.random.key(3)
  mask = controls.random_mask(params, kept, key)
  assert controls.kernel_kept(mask) == kept
  assert mask['a']['bias'].all()
  again = controls.random_mask(params, kept, key)
  jax.tree.map(np.testing.assert_array_equal, mask, again)


def test_random_mask_depends_on_the_key():
  params = {'k': jnp.ones((40, 40))}
  a = controls.random_mask(params, 800, jax.random.key(0))
  b = controls.random_mask(params, 800, jax.random.key(1))
  assert controls.kernel_kept(a) == controls.kernel_kept(b) == 800
  assert not np.array_equal(a['k'], b['k'])


def _context(config, units=(), earlier=(), seed=0):
  """An algorithm context without data: an exploration (needs `pack`) would fail."""
  return algorithms.Context(config, apply_fn=None, units=units, positions={}, pack=None,
                            clients_per_chunk=1, seed=seed, earlier=tuple(earlier))


def test_control_sparsity_source():
  params = _params()  # 7 kernel weights
  key = jax.random.key(0)
  target = lambda *a, **k: controls.target(_context(tiny_config(**k), *a), params, key)
  assert target(control_sparsity=0.4) == (7 - 3, None, 'control_sparsity')
  earlier = [{'algorithm': 'autoflip', 'seed': 1, 'kernel_kept': 6, 'units': {'a': '2/2'}},
             {'algorithm': 'autoflip', 'seed': 0, 'kernel_kept': 5, 'units': {'a': '1/2'}}]
  # AutoFLIP's run of the same seed: its kept count and its removed units per layer.
  assert target((), earlier) == (5, {'a': 1}, 'autoflip run')
  assert target((), earlier, 1) == (6, {'a': 0}, 'autoflip run')
  assert target((), earlier, control_structure=False) == (5, None, 'autoflip run')


def test_structured_controls_remove_autoflips_unit_count_per_layer_then_match_its_kernels():
  config = tiny_config()
  model, params = _tiny_params(config)
  units = model.units()
  removed = {u.name: (i + 1) * 2 for i, u in enumerate(units)}
  for name in ('random', 'magnitude'):
    within = controls.structured_unit_mask(params, units, removed, name, jax.random.key(3))
    counts = masks.unit_counts(within, units)
    assert {k: total - alive for k, (alive, total) in counts.items()} == removed
    kept = controls.kernel_kept(within) // 2
    mask = (controls.magnitude_mask(params, kept, within) if name == 'magnitude' else
            controls.random_mask(params, kept, jax.random.key(4), within))
    assert controls.kernel_kept(mask) == kept
    # Only entries the structure kept, and every removed unit stays removed (bias included).
    for m, w in zip(jax.tree.leaves(mask), jax.tree.leaves(within)):
      assert not np.any(np.asarray(m) & ~np.asarray(w))
      if np.ndim(m) == 1:
        np.testing.assert_array_equal(m, w)
  # magnitude removes the units of smallest L2 norm of their incoming θ0 weights.
  within = controls.structured_unit_mask(params, units, removed, 'magnitude')
  first = units[0]
  kernel = np.asarray(params[first.kernel[0]][first.kernel[1]])
  norms = np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0)
  gone = ~np.asarray(within[first.kernel[0]]['bias'])
  assert gone.sum() == removed[first.name]
  assert norms[gone].max() <= norms[~gone].min()
  with pytest.raises(ValueError, match='cannot remove'):
    controls.structured_unit_mask(params, units, {first.name: kernel.shape[-1]}, 'magnitude')


@pytest.mark.parametrize('overrides, message', [
    (dict(control_sparsity=1.0), 'config.control_sparsity=1.0 must be a number in [0.0, 1.0)'),
    (dict(prunefl_interval=0), 'config.prunefl_interval=0 must be an integer >= 1'),
    (dict(prunefl_init_examples=0), 'config.prunefl_init_examples=0'),
    (dict(prunefl_init_steps=-1), 'config.prunefl_init_steps=-1'),
    (dict(eflprune_rate=1.0), 'config.eflprune_rate=1.0'),
    (dict(eflprune_interval=0), 'config.eflprune_interval=0'),
    (dict(eflprune_steps=0), 'config.eflprune_steps=0'),
    (dict(algorithm='random', e_exp=0), 'config.e_exp=0 with algorithm random'),
])
def test_bad_baseline_fields_are_named(overrides, message):
  with pytest.raises(ValueError) as err:
    validate_config(tiny_config(**overrides))
  assert message in str(err.value)
  validate_config(tiny_config(algorithm='random', e_exp=0, control_sparsity=0.5))


def _reconfigure(mask_a, importance_a):
  """One kernel w = [.1 .2 .3 .4 .5 .6] (cost 1 per weight) and a bias of importance 1; T0 = 1."""
  w = jnp.arange(1, 7, dtype=jnp.float32).reshape(2, 3) / 10
  params = {'l': {'kernel': w * mask_a, 'bias': jnp.zeros(3)}}
  mask = {'l': {'kernel': mask_a, 'bias': jnp.ones(3, bool)}}
  importance = {'l': {'kernel': importance_a, 'bias': jnp.array([1.0, 0.0, 0.0])}}
  coeff = {'l': {'kernel': 1.0, 'bias': 0.0}}
  return prunefl.reconfigure(params, mask, importance, coeff, 1.0, 0.5)['l']


def test_prunefl_reconfiguration_maximises_importance_per_second():
  # Decrease: the 3 smallest kept weights (.1 .2 .3) become candidates; N = 1 + 3, D = 1 + 3.
  # Candidates by g/c: 3 > 4/4 (take; 7/5), 2 > 7/5 (take; 9/6), 0.5 < 9/6 (stop).
  new = _reconfigure(jnp.ones((2, 3), bool), jnp.array([[3.0, 0.5, 2.0], [1.0, 1.0, 1.0]]))
  np.testing.assert_array_equal(new['kernel'], [[True, False, True], [True, True, True]])
  assert new['bias'].all()


def test_prunefl_pruned_weight_regrows_when_important():
  # Kept: .1 .2 .3 .4 .5; sure: >= .3; N = 1 + 2 + 1 + 1 = 5, D = 1 + 3. The pruned weight with
  # g = 10 comes back (10 > 5/4; then 15/5 = 3), and g = 3 is not taken: 3 > 3 is false.
  mask_a = jnp.array([[True, True, True], [True, True, False]])
  new = _reconfigure(mask_a, jnp.array([[3.0, 0.5, 2.0], [1.0, 1.0, 10.0]]))
  np.testing.assert_array_equal(new['kernel'], [[False, False, True], [True, True, True]])


def _tiny_params(config):
  model = models.get_model(config, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  return model, params


def test_prunefl_accumulates_importance_and_reconfigures_at_its_interval():
  config = tiny_config(prunefl_interval=2, num_rounds=4)
  model, params = _tiny_params(config)
  algorithm = algorithms.get('prunefl', config, model.units())
  assert algorithm.track_grad_sq and algorithm.round_mask is None
  coeff, t0 = prunefl.cost_coefficients(params, {}, 100)
  extra = {'importance': jax.tree.map(jnp.zeros_like, params), 'coeff': coeff,
           'time_constant': jnp.float32(t0)}
  like = algorithm.state_like(_context(config), params)
  chex.assert_trees_all_equal_shapes(extra['importance'], like['importance'])
  mask = masks.ones_mask(params)
  update = lambda r, met, extra: algorithm.update(r, params, mask, met, extra)
  # Every other weight has no gradient: those among the decrease candidates are dropped.
  grad = jax.tree.map(lambda p: 0.5 * (jnp.arange(p.size) % 2).reshape(p.shape), params)
  met = federated.RoundMetrics(jnp.float32(1.0), jnp.ones(2), jnp.int32(10), grad)
  new_mask, extra = update(1, met, extra)
  assert new_mask is None
  jax.tree.map(np.testing.assert_array_equal, extra['importance'], grad)
  new_mask, extra = update(2, met, extra)
  assert new_mask is not None
  assert accounting.kept_params(new_mask) < accounting.total_params(params)
  assert all(bool((i == 0).all()) for i in jax.tree.leaves(extra['importance']))
  new_mask, extra = update(3, met, extra)
  new_mask, _ = update(4, met, extra)  # the last round: nothing to train with it
  assert new_mask is None


def test_eflprune_keeps_the_units_with_largest_l1_norm():
  config = tiny_config(eflprune_rate=0.5, eflprune_steps=1)
  model, params = _tiny_params(config)
  units = model.units()
  mask = eflprune.init(_context(config, units), params, None, (config.tp,))[0].mask
  scores = eflprune.unit_scores(params, units)
  for unit in units:
    kernel = np.asarray(mask[unit.kernel[0]]['kernel'])
    count = kernel.shape[-1]
    kept = kernel.reshape(-1, count).any(axis=0)
    assert kept.sum() == count - count // 2
    assert scores[unit.name][kept].min() >= scores[unit.name][~kept].max()
    np.testing.assert_array_equal(mask[unit.kernel[0]]['bias'], kept)  # whole units go
    (path, axis), = unit.consumers
    consumer = np.moveaxis(np.asarray(mask[path[0]][path[1]]), axis, 0)
    fed = consumer.reshape(consumer.shape[0], -1).any(axis=1)
    np.testing.assert_array_equal(fed, np.tile(kept, len(fed) // count))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('baselines'))
  config = tiny_config(**RUN)
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_prunefl_mask_changes_only_after_its_interval(run):
  config, workdir, _ = run
  rows = _rows(workdir, 'prunefl')
  assert [r['round'] for r in rows] == list(range(config.num_rounds + 1))
  total = rows[0]['total_params']
  assert rows[0]['kept_params'] < total  # initial pruning
  changed = [r['round'] for prev, r in zip(rows, rows[1:])
             if r['kept_params'] != prev['kept_params']]
  # Reconfigured after rounds 2 and 4: the mask of rounds 3 and 5 is new, and sent with them.
  assert changed and set(changed) <= {3, 5}
  for r in rows[1:]:
    mask_sent = r['round'] == 1 or r['round'] in changed
    # Up: every client sends its kept float32 values. Down: the same, plus the mask while it
    # is new, as a bitmap of ceil(total / 8) bytes (cheaper here than 4-byte indices).
    assert r['bytes_up'] == config.clients_per_round * 4 * r['kept_params']
    bitmap = -(-total // 8) if mask_sent else 0
    assert 4 * r['kept_params'] > bitmap  # so the bitmap is the encoding
    assert r['bytes_down'] == config.clients_per_round * (4 * r['kept_params'] + bitmap)


def test_eflprune_prunes_units_progressively_and_never_revives(run):
  _, workdir, summaries = run
  rows = _rows(workdir, 'eflprune')
  kept = [r['kept_params'] for r in rows]
  assert kept[0] == kept[1] == kept[2] > kept[3] == kept[4] == kept[5]
  units = next(s for s in summaries if s['algorithm'] == 'eflprune')['units']
  assert units == {'conv0': '2/4', 'conv1': '4/8', 'dense0': '8/16'}  # rate 0.5 reached


def test_resume_with_extra_state_gives_the_same_metrics(run, tmp_path):
  config, workdir, _ = run
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'progress.json'))
  last = os.path.join(copy, 'checkpoints', 'prunefl', str(config.num_rounds))
  assert os.path.isdir(os.path.join(copy, 'checkpoints', 'prunefl', '3'))
  shutil.rmtree(last)  # PruneFL resumes from round 3, with a non-zero importance accumulator
  train.train_and_evaluate(tiny_config(**RUN), copy)
  strip = lambda rows: sorted(
      (json.dumps({k: v for k, v in r.items() if k != 'round_seconds'}, sort_keys=True)
       for r in rows))
  assert strip(_rows(copy)) == strip(_rows(workdir))
