"""Tests for autoflip_jax.data.partition."""

from __future__ import annotations

import numpy as np
import pytest

from autoflip_jax.data import partition as P

# 10 balanced classes of 100 examples, stored in shuffled order.
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 100))

CASES = [
    ('iid', {}),
    ('pathological', {'classes_per_client': 2}),
    ('dirichlet', {'alpha': 0.5}),
]


def _split(method, seed, num_clients=20, labels=LABELS, **kw):
  return P.partition(labels, method, num_clients, np.random.default_rng(seed),
                     **kw)


def _assert_exact_cover(parts, n):
  for p in parts:
    assert p.dtype == np.int64
    assert np.all(np.diff(p) > 0)  # Sorted ascending, no repeats.
  allidx = np.concatenate(parts)
  assert len(allidx) == n
  np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize('method, kw', CASES)
def test_deterministic_and_seed_dependent(method, kw):
  a, b, c = _split(method, 0, **kw), _split(method, 0, **kw), _split(
      method, 1, **kw)
  assert len(a) == 20
  assert all(np.array_equal(p, q) for p, q in zip(a, b))
  assert not all(np.array_equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize('method, kw', CASES)
def test_exact_cover(method, kw):
  _assert_exact_cover(_split(method, 3, **kw), len(LABELS))


def test_iid_sizes_and_label_mix():
  parts = _split('iid', 0, num_clients=7)
  assert sorted(len(p) for p in parts) == [142] * 1 + [143] * 6
  # With 142+ random examples each client sees all 10 labels.
  assert all(len(np.unique(LABELS[p])) == 10 for p in parts)


def test_pathological_exact_two_labels():
  for seed in range(5):
    parts = _split('pathological', seed, classes_per_client=2)
    for p in parts:
      assert len(p) == 50
      labs, counts = np.unique(LABELS[p], return_counts=True)
      assert len(labs) == 2
      np.testing.assert_array_equal(counts, [25, 25])
    held = np.concatenate([np.unique(LABELS[p]) for p in parts])
    np.testing.assert_array_equal(np.bincount(held), [4] * 10)


def test_pathological_pairs_are_random_not_fixed():
  parts = _split('pathological', 0, classes_per_client=2)
  pairs = {tuple(np.unique(LABELS[p])) for p in parts}
  assert len(pairs) > 5  # A fixed round-robin layout would give 5 pairs.


def test_pathological_general_case():
  # 7 clients * 3 classes = 21 slots over 10 classes: counts 2 or 3.
  parts = _split('pathological', 0, num_clients=7, classes_per_client=3)
  _assert_exact_cover(parts, len(LABELS))
  assert all(len(np.unique(LABELS[p])) == 3 for p in parts)
  held = np.bincount(np.concatenate([np.unique(LABELS[p]) for p in parts]))
  assert sorted(held) == [2] * 9 + [3]
  # All classes held: k == number of classes.
  parts = _split('pathological', 0, num_clients=3, classes_per_client=10)
  assert all(len(np.unique(LABELS[p])) == 10 for p in parts)


def test_pathological_too_few_slots_drops_unheld_classes():
  parts = _split('pathological', 0, num_clients=2, classes_per_client=2)
  assert [len(p) for p in parts] == [200, 200]
  assert len(np.unique(LABELS[np.concatenate(parts)])) == 4


def test_dirichlet_min_examples_and_skew():
  parts = _split('dirichlet', 0, num_clients=10, alpha=0.1, min_examples=30)
  _assert_exact_cover(parts, len(LABELS))
  assert min(len(p) for p in parts) >= 30
  # Small alpha: each client is dominated by few labels.
  top = [np.bincount(LABELS[p]).max() / len(p) for p in parts]
  assert np.mean(top) > 0.4


def test_dirichlet_impossible_raises():
  with pytest.raises(ValueError, match='alpha'):
    _split('dirichlet', 0, num_clients=50, alpha=0.01, min_examples=15,
           max_tries=3)


@pytest.mark.parametrize('method, kw, field', [
    ('iid', {'num_clients': 0}, 'num_clients'),
    ('iid', {'num_clients': 1001}, 'num_clients'),
    ('iid', {'num_clients': 10, 'min_examples': 101}, 'min_examples'),
    ('pathological', {'classes_per_client': 11}, 'classes_per_client'),
    ('pathological', {'classes_per_client': 0}, 'classes_per_client'),
    ('dirichlet', {'alpha': 0.0}, 'alpha'),
    ('dirichlet', {'alpha': -1.0}, 'alpha'),
    ('dirichlet', {'alpha': 1.0, 'min_examples': 60}, 'min_examples'),
])
def test_errors_name_the_argument(method, kw, field):
  kw = dict(kw)
  num_clients = kw.pop('num_clients', 20)
  with pytest.raises(ValueError, match=field):
    _split(method, 0, num_clients=num_clients, **kw)


def test_pathological_client_below_min_examples():
  # Class 0 has 2 examples; with 4 clients of 1 class each, 2 clients share
  # class 0 and get 1 example each.
  labels = np.array([0] * 2 + [1] * 98)
  parts = _split('pathological', 0, num_clients=4, labels=labels,
                 classes_per_client=1)
  assert sorted(len(p) for p in parts) == [1, 1, 49, 49]
  with pytest.raises(ValueError, match=r'1 examples < min_examples=2'):
    _split('pathological', 0, num_clients=4, labels=labels,
           classes_per_client=1, min_examples=2)


def test_unknown_method_lists_names():
  with pytest.raises(ValueError, match="'iid', 'pathological', 'dirichlet'"):
    _split('shards', 0)


def test_bad_labels():
  with pytest.raises(ValueError, match='labels'):
    P.iid(np.zeros((4, 2), np.int64), 2, np.random.default_rng(0))


# 6 natural clients (group ids 0..5, stored out of order) of sizes
# 5, 1, 7, 3, 0 (id 4 absent), 4.
GROUPS = np.random.default_rng(7).permutation(
    np.repeat([0, 1, 2, 3, 5], [5, 1, 7, 3, 4]))


def test_natural_takes_whole_groups():
  parts, chosen = P.natural(GROUPS, 5, np.random.default_rng(0))
  np.testing.assert_array_equal(chosen, [0, 1, 2, 3, 5])
  for p, g in zip(parts, chosen):
    assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    np.testing.assert_array_equal(p, np.flatnonzero(GROUPS == g))


def test_natural_subset_is_seeded_and_respects_min_examples():
  def pick(seed, k=2, min_examples=4):
    return tuple(P.natural(GROUPS, k, np.random.default_rng(seed),
                           min_examples)[1])

  assert pick(0) == pick(0)
  picks = {pick(s) for s in range(20)}
  # Only groups 0, 2 and 5 have >= 4 examples; every pair of them occurs.
  assert picks == {(0, 2), (0, 5), (2, 5)}
  with pytest.raises(ValueError, match=r'num_clients=4 but only 3 natural '
                     r'clients have >= min_examples=4'):
    pick(0, k=4)
  with pytest.raises(ValueError, match='groups'):
    P.natural(np.zeros((2, 2), np.int64), 1, np.random.default_rng(0))


def test_cap_examples():
  parts = [np.arange(10), np.arange(20, 23), np.arange(30, 60)]
  capped = P.cap_examples(parts, 5, np.random.default_rng(0))
  assert [len(p) for p in capped] == [5, 3, 5]
  assert capped[1] is parts[1]  # Small clients are untouched.
  for c, p in zip(capped, parts):
    assert np.all(np.diff(c) > 0) and np.all(np.isin(c, p))
  again = P.cap_examples(parts, 5, np.random.default_rng(0))
  assert all(np.array_equal(a, b) for a, b in zip(capped, again))
  other = P.cap_examples(parts, 5, np.random.default_rng(1))
  assert not np.array_equal(capped[2], other[2])
  assert P.cap_examples(parts, 0, np.random.default_rng(0)) == parts
  with pytest.raises(ValueError, match='max_examples'):
    P.cap_examples(parts, -1, np.random.default_rng(0))


def test_partition_refuses_natural():
  with pytest.raises(ValueError, match=r'partition.natural\(groups'):
    _split('natural', 0)
