"""Tests for the TFDS sources, on tiny real ArrayRecord datasets.

The fixtures are written by TFDS's own builder machinery: subclasses of the
real MNIST, EMNIST and CIFAR-10 builders (same features, version and
configs) whose example generators yield a few synthetic images instead of
downloading. `tfds.builder(name, data_dir)` then finds them exactly where a
`tfds build` would have put them, and the loader reads them through the
real ArrayRecord data source, without TensorFlow.
"""

from __future__ import annotations

import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import cifar as tfds_cifar
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from autoflip_jax import data
from autoflip_jax.data import tfds_source
from tests.data_helpers import data_config

N_TRAIN, N_TEST = 60, 20
MARK = (2, 3)  # Pixel that encodes the label as 4 * label.


def _image(rng, shape, label):
  """Random uint8 image whose MARK pixel is 4 * label, as a PIL image."""
  img = rng.integers(0, 256, shape, dtype=np.uint8)
  img[MARK] = 4 * label
  return PIL.Image.fromarray(img[..., 0] if shape[-1] == 1 else img)


def _examples(n, seed, shape, num_classes, with_id=False):
  rng = np.random.default_rng(seed)
  for i in range(n):
    ex = {'image': _image(rng, shape, i % num_classes),
          'label': i % num_classes}
    if with_id:
      ex['id'] = f'ex_{i}'
    yield i, ex


class _FakeMnist(tfds_mnist.MNIST, skip_registration=True):
  name = 'mnist'

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(N_TRAIN, 0),
            'test': self._generate_examples(N_TEST, 1)}

  def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
    return _examples(n, seed, (28, 28, 1), 10)


class _FakeEmnist(tfds_mnist.EMNIST, skip_registration=True):
  name = 'emnist'

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(N_TRAIN, 2),
            'test': self._generate_examples(N_TEST, 3)}

  def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
    return _examples(n, seed, (28, 28, 1), 62)


class _FakeCifar10(tfds_cifar.Cifar10, skip_registration=True):
  name = 'cifar10'

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(N_TRAIN, 4),
            'test': self._generate_examples(N_TEST, 5)}

  def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
    return _examples(n, seed, (32, 32, 3), 10, with_id=True)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('tfds'))
  for builder in (_FakeMnist(data_dir=root, file_format='array_record'),
                  _FakeEmnist(config='byclass', data_dir=root,
                              file_format='array_record'),
                  _FakeCifar10(data_dir=root, file_format='array_record')):
    builder.download_and_prepare()
  return root


def _config(name, data_dir, **overrides):
  return data_config(**{'name': name, 'data_dir': data_dir,
                        'partition': 'iid', **overrides})


def _marks(x, at=MARK):
  return np.rint(x[(slice(None),) + at + (0,)] * 255).astype(np.int64)


def test_mnist_official_splits_shapes_and_pairing(data_dir):
  ds = data.load(_config('mnist', data_dir), num_clients=4, seed=0)
  assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
  np.testing.assert_array_equal(ds.client_sizes, [15] * 4)
  assert ds.test_x.shape == (N_TEST, 28, 28, 1)  # Full official test split.
  np.testing.assert_array_equal(np.sort(ds.test_y),
                                np.sort(np.arange(N_TEST) % 10))
  x = np.concatenate(ds.client_x + [ds.test_x])
  y = np.concatenate(ds.client_y + [ds.test_y])
  assert x.dtype == np.float32 and y.dtype == np.int32
  assert 0.0 <= x.min() and x.max() <= 1.0
  pixels = x * 255
  np.testing.assert_allclose(pixels, np.rint(pixels), atol=1e-4)
  # Each image still carries its own label: x and y stayed paired.
  np.testing.assert_array_equal(_marks(x), 4 * y)
  np.testing.assert_array_equal(np.bincount(np.concatenate(ds.client_y)),
                                [6] * 10)
  assert 'tensorflow' not in sys.modules


def test_emnist_is_transposed_upright_and_has_62_classes(data_dir):
  ds = data.load(_config('emnist', data_dir), num_clients=3, seed=0)
  assert ds.num_classes == 62
  x = np.concatenate(ds.client_x)
  y = np.concatenate(ds.client_y)
  # The stored [2, 3] pixel is read back at [3, 2].
  np.testing.assert_array_equal(_marks(x, (3, 2)), 4 * y)
  assert np.mean(_marks(x, MARK) == 4 * y) < 0.2


def test_cifar10_rgb(data_dir):
  ds = data.load(_config('cifar10', data_dir, partition='pathological'),
                 num_clients=5, seed=0)
  assert ds.input_shape == (32, 32, 3)
  assert all(len(np.unique(y)) == 2 for y in ds.client_y)
  x, y = np.concatenate(ds.client_x), np.concatenate(ds.client_y)
  np.testing.assert_array_equal(_marks(x), 4 * y)


def test_caps_and_determinism(data_dir):
  cfg = _config('mnist', data_dir, max_examples_per_client=4,
                max_test_examples=7)
  a = data.load(cfg, 3, seed=1)
  b = data.load(cfg, 3, seed=1)
  np.testing.assert_array_equal(a.client_sizes, [4, 4, 4])
  assert len(a.test_y) == 7
  for xa, xb in zip(a.client_x + [a.test_x], b.client_x + [b.test_x]):
    np.testing.assert_array_equal(xa, xb)


def test_missing_data_says_how_to_build(tmp_path):
  empty = str(tmp_path / 'empty')
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load(_config('cifar100', empty), 2, seed=0)
  message = str(e.value)
  assert f'tfds build cifar100 --data_dir={empty} ' in message
  assert '--file_format=array_record' in message
  assert '--config.data.data_dir' in message
  assert 'pip install tensorflow tensorflow-datasets==4.9.10' in message
  with pytest.raises(data.DatasetNotFoundError, match='emnist/balanced'):
    data.load(_config('emnist', empty, tfds_name='emnist/balanced'), 2, 0)


@pytest.mark.parametrize('overrides, num_clients, message', [
    ({'tfds_name': 'emnist/foo'}, 2, "config.data.tfds_name='emnist/foo'"),
    ({'partition': 'natural'}, 2, "partition='natural' needs a dataset"),
    ({'classes_per_client': 63}, 2, r'classes_per_client=63 .*\[1, 62\]'),
    ({}, 697_933, r'num_clients=697933 must be in \[1, 697932\]'),
])
def test_validate_static_facts(overrides, num_clients, message):
  with pytest.raises(ValueError, match=message):
    data.validate(_config('emnist', '', **overrides), num_clients)


def test_tfds_name_table():
  assert tfds_source.tfds_name('emnist') == 'emnist/byclass'
  assert tfds_source.tfds_name('emnist', 'emnist/letters') == 'emnist/letters'
  spec = data.sources.spec(_config('emnist', '', tfds_name='emnist/letters'))
  assert (spec.num_classes, spec.num_examples) == (37, 88_800)
  # The static table agrees with the builders TFDS would read.
  for name, options in tfds_source.TFDS_NAMES.items():
    for full, info in options.items():
      builder = tfds.builder(full, data_dir='/nonexistent')
      assert builder.info.features['label'].num_classes == info.num_classes
      assert tuple(builder.info.features['image'].shape) == info.shape, name
