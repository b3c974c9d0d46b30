"""Robust and private guidance (exploration.py), the attacks of the threat simulation, the
attackers' choice, noisy labels, and AutoFLIP's exploration wired with them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import exploration, masks, setup
from autoflip_jax.algorithms import autoflip
from autoflip_jax.data import loader
from tests.data_helpers import data_config
from tests.helpers import tiny_config

# One coordinate's reports from 5 explorers, and a second coordinate.
REPORTS = np.array([[1.0, 5.0], [2.0, 4.0], [3.0, 3.0], [10.0, 2.0], [100.0, 1.0]], np.float32)


def test_median_by_hand():
  out = exploration.aggregate({'w': jnp.asarray(REPORTS)}, aggregation='median')
  np.testing.assert_array_equal(out['w'], [3.0, 3.0])


def test_trimmed_mean_by_hand():
  # trim 0.2 of 5: one value cut at each end; 0.1 of 5 cuts none (⌊0.5⌋ = 0): the mean.
  out = exploration.aggregate({'w': jnp.asarray(REPORTS)}, aggregation='trimmed_mean', trim=0.2)
  np.testing.assert_allclose(out['w'], [(2 + 3 + 10) / 3, 3.0])
  out = exploration.aggregate({'w': jnp.asarray(REPORTS)}, aggregation='trimmed_mean', trim=0.1)
  np.testing.assert_allclose(out['w'], REPORTS.mean(0))
  out = exploration.aggregate({'w': jnp.asarray(REPORTS)}, aggregation='trimmed_mean', trim=0.4)
  np.testing.assert_allclose(out['w'], [3.0, 3.0])


def test_mean_guidance_is_the_reference():
  sqdev = {'w': jnp.asarray(REPORTS)}
  ref = masks.normalize(jax.tree.map(lambda d: jnp.mean(d, axis=0), sqdev), 'minmax')
  np.testing.assert_array_equal(exploration.guidance(sqdev)['w'], ref['w'])


def test_clipping_by_hand():
  # Explorer 0: norm 5 over both tensors -> scaled to the clip 1; explorer 1: norm 0.5, kept.
  tree = {'a': jnp.asarray([[3.0], [0.3]]), 'b': jnp.asarray([[4.0], [0.4]])}
  out = exploration.clip_each(tree, 1.0)
  np.testing.assert_allclose(out['a'], [[0.6], [0.3]], rtol=1e-6)
  np.testing.assert_allclose(out['b'], [[0.8], [0.4]], rtol=1e-6)


def test_noisy_mean_is_sum_plus_noise_over_count():
  sqdev = {'w': jnp.ones((4, 20000))}
  out = np.asarray(exploration.noisy_mean(sqdev, 2.0, jax.random.key(0))['w'])
  np.testing.assert_allclose(out.mean(), 1.0, atol=0.02)
  np.testing.assert_allclose(out.std(), 2.0 / 4, rtol=0.05)


def _honest(k=10, seed=0):
  """k honest-looking reports: a shared pattern of which weights move, times explorer noise."""
  rng = np.random.default_rng(seed)
  pattern = rng.random((40, 30)).astype(np.float32) ** 4
  noise = rng.uniform(0.5, 1.5, (k, 40, 30)).astype(np.float32)
  return {'k': jnp.asarray(pattern * noise), 'b': jnp.asarray(rng.random((k, 30), np.float32))}


def test_filtered_mean_is_the_mean_without_outliers():
  sqdev = _honest()
  outlier, agreement, _ = exploration.explorer_outliers(sqdev)
  assert not np.any(outlier) and np.all(np.asarray(agreement) > 0.5)
  out = exploration.aggregate(sqdev, aggregation='filtered_mean')
  for name in sqdev:
    np.testing.assert_allclose(out[name], np.mean(sqdev[name], axis=0), rtol=1e-6)


@pytest.mark.parametrize('kind', exploration.ATTACKS)
def test_filtered_mean_drops_the_attackers_and_averages_the_rest(kind):
  sqdev = _honest()
  bad = jnp.asarray([3, 7])
  attacked = exploration.attack(sqdev, bad, kind, jax.random.key(0))
  outlier, _, _ = exploration.explorer_outliers(attacked)
  # Inverted and random reports disagree with the others' ranking, a scaled one is too loud.
  np.testing.assert_array_equal(np.flatnonzero(outlier), [3, 7])
  # What AutoFLIP logs and records: the dropped explorers' client ids.
  config = tiny_config(guidance_aggregation='filtered_mean')
  flags = autoflip.explorer_outliers(config, attacked)
  assert autoflip.dropped_explorers(flags, np.arange(100, 110)) == [103, 107]
  assert autoflip.explorer_outliers(tiny_config(), attacked) is None  # only for filtered_mean
  out = exploration.aggregate(attacked, aggregation='filtered_mean')
  # The flags computed once (as AutoFLIP's init does) give the same guidance.
  once = exploration.aggregate(attacked, aggregation='filtered_mean', outlier=flags)
  for got, want in zip(jax.tree.leaves(once), jax.tree.leaves(out)):
    np.testing.assert_array_equal(got, want)
  honest = np.setdiff1d(np.arange(10), [3, 7])
  for name in sqdev:
    np.testing.assert_allclose(out[name], np.mean(np.asarray(attacked[name])[honest], axis=0),
                               rtol=1e-5)


def _stack(seed=0, k=4, shape=(6, 5)):
  rng = np.random.default_rng(seed)
  return {'k': jnp.asarray(rng.random((k,) + shape).astype(np.float32)),
          'b': jnp.asarray(rng.random((k, 5)).astype(np.float32))}


def test_invert_reverses_the_ranking_within_each_tensor():
  sqdev = _stack()
  out = exploration.attack(sqdev, np.array([1, 3]), 'invert', jax.random.key(0))
  for name in ('k', 'b'):
    for i in (1, 3):
      x, y = np.asarray(sqdev[name][i]).ravel(), np.asarray(out[name][i]).ravel()
      np.testing.assert_array_equal(np.argsort(y), np.argsort(x)[::-1])  # ranking reversed
      np.testing.assert_array_equal(np.sort(y), np.sort(x))              # same values
    for i in (0, 2):  # honest explorers untouched
      np.testing.assert_array_equal(out[name][i], sqdev[name][i])


def test_scale_multiplies_by_100_and_random_keeps_the_values():
  sqdev = _stack()
  out = exploration.attack(sqdev, np.array([2]), 'scale', jax.random.key(0))
  np.testing.assert_allclose(out['k'][2], 100 * sqdev['k'][2])
  np.testing.assert_array_equal(out['k'][0], sqdev['k'][0])
  out = exploration.attack(sqdev, np.array([2]), 'random', jax.random.key(0))
  assert not np.array_equal(out['k'][2], sqdev['k'][2])
  np.testing.assert_array_equal(np.sort(np.ravel(out['k'][2])), np.sort(np.ravel(sqdev['k'][2])))


def test_attackers_fixed_by_the_seed():
  a = autoflip.attackers(20, 0.2, seed=0)
  assert len(a) == 4 and np.array_equal(a, autoflip.attackers(20, 0.2, seed=0))
  assert not np.array_equal(a, autoflip.attackers(20, 0.2, seed=1))
  assert len(autoflip.attackers(20, 0.0, seed=0)) == 0


def test_label_noise_permutes_the_chosen_clients_classes():
  clean = loader.load(data_config(), 10, 0)
  noisy = loader.load(data_config(label_noise=0.3), 10, 0)
  changed = [k for k in range(10) if not np.array_equal(clean.client_y[k], noisy.client_y[k])]
  assert 1 <= len(changed) <= 3
  # the ids the robustness grid reports as noisy: those 3 (a permutation may fix a client's
  # two classes, so changed is a subset)
  assert set(changed) <= set(loader.noisy_clients(10, 0.3, 0))
  assert len(loader.noisy_clients(10, 0.3, 0)) == 3
  for k in changed:  # a consistent class mapping: same examples, one label per old label
    pairs = set(zip(clean.client_y[k].tolist(), noisy.client_y[k].tolist()))
    assert len(pairs) == len(set(clean.client_y[k].tolist()))
  np.testing.assert_array_equal(clean.test_y, noisy.test_y)


def test_jaccard():
  a = {'k': np.array([[1, 1], [0, 0]], bool), 'b': np.array([1, 0], bool)}
  b = {'k': np.array([[1, 0], [1, 0]], bool), 'b': np.array([0, 0], bool)}
  assert masks.jaccard(a, b) == pytest.approx(1 / 3)
  assert masks.jaccard(a, a) == 1.0


@pytest.fixture(scope='module')
def explored():
  """The tiny job's exploration (5 explorers), run once: (setup, θ0, reports)."""
  config = tiny_config(num_clients=5, clients_per_round=5)
  s = setup.resolve(config)
  params0 = s.params0(0)
  ids = autoflip.explorer_ids(config.num_clients, config.c_exp, 0)
  explore = exploration.make_explore_fn(s.apply_fn, optimizer=config.optimizer,
                                        learning_rate=config.learning_rate, epochs=config.e_exp,
                                        patience=0, clients_per_chunk=s.clients_per_chunk)
  data, _ = s.pack(ids)
  return s, params0, explore(params0, data, jnp.asarray(ids), jax.random.key(0)).sqdev


def _mask(explored, **overrides):
  s, _, sqdev = explored
  config = tiny_config(num_clients=5, clients_per_round=5, **overrides)
  rng = jax.random.key(1)
  reports = autoflip.server_reports(config, sqdev, rng, seed=0)
  guidance = autoflip.server_guidance(config, reports, None, rng)
  return jax.jit(autoflip.mask_from_guidance(config, s.units, config.tp))(guidance)


def test_defaults_leave_the_reports_and_guidance_as_before(explored):
  _, _, sqdev = explored
  config = tiny_config()
  assert autoflip.server_reports(config, sqdev, jax.random.key(1), seed=0) is sqdev
  ref = exploration.guidance(sqdev, None, config.guidance_normalization)
  out = autoflip.server_guidance(config, sqdev, None, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
    np.testing.assert_array_equal(a, b)


def test_robust_aggregations_resist_an_inverting_explorer(explored):
  clean = _mask(explored)
  hurt = _mask(explored, **{'attack.fraction': 0.2})
  attacked = {'attack.fraction': 0.2}
  for aggregation, trim in (('median', 0.1), ('trimmed_mean', 0.2), ('filtered_mean', 0.1)):
    robust = _mask(explored, guidance_aggregation=aggregation, guidance_trim=trim, **attacked)
    clean_robust = _mask(explored, guidance_aggregation=aggregation, guidance_trim=trim)
    # One inverting explorer of five moves the mean's mask more than the robust one's.
    assert masks.jaccard(robust, clean_robust) > masks.jaccard(hurt, clean), aggregation


def test_private_exploration_noise_changes_the_mask_less_as_noise_falls(explored):
  _, _, sqdev = explored
  # A clip nobody reaches (the largest report's norm) and vanishing noise give the clean mean's
  # mask back; noise of the clip's size does not.
  clip = 1.01 * float(jnp.max(jax.vmap(exploration.tree_norm)(sqdev)))
  clean = _mask(explored, **{'dp.exploration_clip': clip})
  loud = _mask(explored, **{'dp.exploration_clip': clip, 'dp.exploration_noise': 1.0})
  quiet = _mask(explored, **{'dp.exploration_clip': clip, 'dp.exploration_noise': 1e-9})
  assert masks.jaccard(quiet, clean) > 0.99
  assert masks.jaccard(loud, clean) < masks.jaccard(quiet, clean)


def test_per_round_guidance_noises_each_report_once():
  # With guidance_per_round the state holds every client's clipped report with its own
  # N(0, (zC)²) noise (released once, reused every round); attackers act before the clip.
  config = tiny_config(guidance_per_round=True, **{'dp.exploration_clip': 1.0,
                                                   'dp.exploration_noise': 0.5})
  sqdev = {'w': jnp.full((4, 50000), 1e-3)}  # norm 0.22: below the clip, kept
  out = np.asarray(autoflip.server_reports(config, sqdev, jax.random.key(0), seed=0)['w'])
  noise = out - 1e-3
  np.testing.assert_allclose(noise.std(axis=1), 0.5, rtol=0.05)
  assert not np.allclose(noise[0], noise[1])
