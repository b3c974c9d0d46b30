"""Tests for autoflip_jax.data.load / validate on mnist_5k."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from autoflip_jax import data
from autoflip_jax.data import loader
from tests.data_helpers import data_config as _config


def test_load_pathological_20_clients():
  ds = data.load(_config(), num_clients=20, seed=0)
  assert ds.name == 'mnist_5k'
  assert ds.num_classes == 10
  assert ds.num_clients == 20
  assert ds.input_shape == (28, 28, 1)
  assert ds.test_x.shape == (1000, 28, 28, 1)
  assert ds.test_y.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(ds.test_y), [100] * 10)
  assert ds.num_train_examples == 4000
  np.testing.assert_array_equal(ds.client_sizes, [200] * 20)
  assert ds.client_sizes.dtype == np.int64
  for x, y in zip(ds.client_x, ds.client_y):
    assert x.dtype == np.float32 and x.shape == (200, 28, 28, 1)
    assert len(np.unique(y)) == 2
  # Test and train images are disjoint and together are all 5000 images.
  allx = np.concatenate(ds.client_x + [ds.test_x]).reshape(5000, -1)
  xs, _ = data.embedded.load_mnist_5k()
  assert np.isclose(allx.sum(), xs.sum(), rtol=1e-6)
  assert np.unique(allx, axis=0).shape[0] == np.unique(
      xs.reshape(5000, -1), axis=0).shape[0]


def test_load_is_deterministic():
  a = data.load(_config(), 20, seed=7)
  b = data.load(_config(), 20, seed=7)
  c = data.load(_config(), 20, seed=8)
  np.testing.assert_array_equal(a.test_x, b.test_x)
  np.testing.assert_array_equal(a.test_y, b.test_y)
  for k in range(20):
    np.testing.assert_array_equal(a.client_x[k], b.client_x[k])
    np.testing.assert_array_equal(a.client_y[k], b.client_y[k])
  assert not np.array_equal(a.test_x, c.test_x)


def test_load_iid_and_dirichlet():
  ds = data.load(_config(partition='iid', test_fraction=0.1), 8, seed=0)
  assert len(ds.test_y) == 500
  np.testing.assert_array_equal(ds.client_sizes, [563] * 4 + [562] * 4)
  ds = data.load(_config(partition='dirichlet', alpha=0.3, min_examples=20),
                 10, seed=0)
  assert ds.num_train_examples == 4000 and ds.client_sizes.min() >= 20


@pytest.mark.parametrize('field', loader.FIELDS)
def test_every_field_is_required(field):
  # No defaults in the data code: experiments/configs/default.py sets them.
  fields = _config().to_dict()
  del fields[field]
  with pytest.raises(ValueError, match=rf'config\.data\.{field} is missing'):
    data.validate(ml_collections.ConfigDict(fields), 20)


def test_missing_fields_are_all_named():
  with pytest.raises(ValueError, match=r'config\.data\.path, '
                     r'config\.data\.alpha are missing'):
    data.validate(ml_collections.ConfigDict(
        {k: v for k, v in _config().to_dict().items()
         if k not in ('path', 'alpha')}), 20)


def test_load_does_not_validate(monkeypatch):
  # Callers validate first (config_checks.validate_config); load trusts it.
  def fail(*args):
    raise AssertionError(f'validate{args} called by load')

  monkeypatch.setattr(loader, 'validate', fail)
  monkeypatch.setattr(data, 'validate', fail)
  assert data.load(_config(), 20, seed=0).num_clients == 20


def test_pack_loaded_clients():
  ds = data.load(_config(), 20, seed=0)
  steps = data.steps_for(ds.client_sizes, 32)
  b = data.pack_clients(ds.client_x, ds.client_y, 32, steps)
  assert steps == 7
  assert b.x.shape == (20, 7, 32, 28, 28, 1)
  assert int(b.valid.sum()) == 4000


@pytest.mark.parametrize('overrides, num_clients, message', [
    ({'name': 'foo'}, 20, "config.data.name='foo' is not one of"),
    ({'partition': 'shards'}, 20, 'config.data.partition'),
    ({'test_fraction': 0.0}, 20, 'config.data.test_fraction'),
    ({'test_fraction': 1.0}, 20, 'config.data.test_fraction'),
    ({'classes_per_client': 0}, 20, 'config.data.classes_per_client'),
    ({'classes_per_client': 11}, 20, 'config.data.classes_per_client'),
    ({'alpha': 0.0}, 20, 'config.data.alpha'),
    ({'min_examples': 3}, 2000, 'config.data.min_examples'),
    ({}, 0, 'num_clients'),
    ({}, 4001, r'num_clients=4001 .*4000 training examples'),
])
def test_validate_errors(overrides, num_clients, message):
  with pytest.raises(ValueError, match=message):
    data.validate(_config(**overrides), num_clients)


def test_validate_accepts_good_config():
  data.validate(_config(), 20)
  data.validate(_config(partition='dirichlet', alpha=0.1), 100)


def test_load_digits_stratified_holdout():
  ds = data.load(_config(name='digits', partition='iid'), 10, seed=0)
  assert ds.num_classes == 10 and ds.input_shape == (8, 8, 1)
  assert len(ds.test_y) == 359 and ds.num_train_examples == 1438
  # Stratified: every class keeps its share of the test set (+-1).
  full = np.bincount(data.embedded.load_digits()[1])
  assert np.all(np.abs(np.bincount(ds.test_y) - 0.2 * full) <= 1)


def test_caps_on_clients_and_test_set():
  cfg = _config(partition='iid', max_examples_per_client=50,
                max_test_examples=123)
  ds = data.load(cfg, 8, seed=3)
  np.testing.assert_array_equal(ds.client_sizes, [50] * 8)
  assert len(ds.test_y) == 123
  full = data.load(_config(partition='iid'), 8, seed=3)
  # Each capped client is a subset of the same client without a cap.
  for capped, whole in zip(ds.client_x, full.client_x):
    rows = {r.tobytes() for r in whole.reshape(len(whole), -1)}
    assert all(r.tobytes() in rows for r in capped.reshape(50, -1))
  assert ds.client_names == []


@pytest.mark.parametrize('overrides, message', [
    ({'partition': 'natural'},
     r"partition='natural' needs a dataset with natural clients "
     r"\('femnist', 'shakespeare'\); for mnist_5k use one of \('iid', "
     r"'pathological', 'dirichlet'\)"),
    ({'max_examples_per_client': -1}, 'config.data.max_examples_per_client'),
    ({'max_test_examples': 1.5}, 'config.data.max_test_examples'),
    ({'name': 'digits', 'classes_per_client': 11},
     'config.data.classes_per_client'),
])
def test_validate_new_fields(overrides, message):
  with pytest.raises(ValueError, match=message):
    data.validate(_config(**overrides), 20)


def test_validate_natural_sources_without_reading():
  # Natural sources have no static size: any num_clients passes validate.
  data.validate(_config(name='femnist', partition='natural'), 5000)
  data.validate(_config(name='shakespeare', partition='dirichlet',
                        classes_per_client=80), 3)
