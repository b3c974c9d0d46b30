"""Federated datasets: loading, client partitioning and batching.

`load(config.data, num_clients, seed)` returns a `FederatedDataset`;
`validate(config.data, num_clients)` performs the cheap config checks without
reading any data.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable


class DatasetNotFoundError(FileNotFoundError):
  """A dataset's files are not available locally (message says how to get)."""


# Imported after DatasetNotFoundError: `embedded` imports it from here.
import numpy as np  # noqa: E402

from autoflip_jax.data import embedded  # noqa: E402
from autoflip_jax.data import partition as partition_lib  # noqa: E402
from autoflip_jax.data.batching import ClientBatch  # noqa: E402,F401
from autoflip_jax.data.batching import pack_clients  # noqa: E402,F401
from autoflip_jax.data.batching import steps_for  # noqa: E402,F401

DATASETS = ('mnist_5k',)

# name -> (loader, number of classes, number of examples). The last two are
# static so `validate` can check a config without reading data.
_REGISTRY: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]],
                           int, int]] = {
    'mnist_5k': (embedded.load_mnist_5k, embedded.MNIST_NUM_CLASSES,
                 embedded.MNIST_5K_ROWS),
}

_DEFAULTS = {
    'partition': 'pathological',
    'classes_per_client': 2,
    'alpha': 0.5,
    'test_fraction': 0.2,
    'min_examples': 1,
}


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedDataset:
  """Training data split across clients plus a shared (server) test set.

  client_x[k] is float32 [n_k, H, W, C]; client_y[k] is int32 [n_k].
  Equality is identity (eq=False): comparing array fields elementwise would
  be ambiguous, and list fields are unhashable.
  """
  name: str
  client_x: list[np.ndarray]
  client_y: list[np.ndarray]
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int

  @property
  def num_clients(self) -> int:
    return len(self.client_x)

  @property
  def client_sizes(self) -> np.ndarray:
    """int64 [num_clients]: number of training examples per client."""
    return np.array([len(y) for y in self.client_y], dtype=np.int64)

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example, e.g. (28, 28, 1)."""
    return tuple(self.test_x.shape[1:])

  @property
  def num_train_examples(self) -> int:
    return int(self.client_sizes.sum())


def _field(data_config: Any, name: str) -> Any:
  return getattr(data_config, name, _DEFAULTS.get(name))


def _split_sizes(num_examples: int, test_fraction: float) -> tuple[int, int]:
  n_test = int(round(test_fraction * num_examples))
  return n_test, num_examples - n_test


def _stratified_holdout(labels: np.ndarray, n_test: int,
                        rng: np.random.Generator,
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Splits shuffled indices into (test, train), stratified by label.

  All indices are shuffled; class c contributes its first q_c shuffled
  examples to the test set, where the quotas q_c = n_test * n_c / N are
  rounded by largest remainder so that sum(q_c) == n_test exactly. Both
  returned arrays keep the shuffled order.
  """
  perm = rng.permutation(len(labels))
  classes, counts = np.unique(labels, return_counts=True)
  raw = n_test * counts / len(labels)
  quota = np.floor(raw).astype(np.int64)
  extra = np.argsort(-(raw - quota), kind='stable')[:n_test - quota.sum()]
  quota[extra] += 1
  shuffled = labels[perm]
  is_test = np.zeros(len(labels), bool)
  for c, q in zip(classes, quota):
    is_test[np.flatnonzero(shuffled == c)[:q]] = True
  return perm[is_test], perm[~is_test]


def validate(data_config: Any, num_clients: int) -> None:
  """Checks a data config without loading data; raises ValueError if bad.

  Checks: the dataset name and partition method are known, test_fraction is
  in (0, 1) and leaves >= 1 example on each side, 1 <= classes_per_client <=
  number of classes, alpha > 0, min_examples >= 0, 1 <= num_clients <=
  number of training examples, and min_examples * num_clients fits.
  """
  name = getattr(data_config, 'name', None)
  if name not in _REGISTRY:
    raise ValueError(f'config.data.name={name!r} is not one of {DATASETS}')
  _, num_classes, num_examples = _REGISTRY[name]
  method = _field(data_config, 'partition')
  if method not in partition_lib.METHODS:
    raise ValueError(
        f'config.data.partition={method!r} is not one of '
        f'{partition_lib.METHODS}')
  tf = _field(data_config, 'test_fraction')
  if not isinstance(tf, numbers.Real) or not 0 < tf < 1:
    raise ValueError(f'config.data.test_fraction={tf!r} must be in (0, 1)')
  n_test, n_train = _split_sizes(num_examples, tf)
  if n_test < 1 or n_train < 1:
    raise ValueError(
        f'config.data.test_fraction={tf!r} leaves {n_test} test and '
        f'{n_train} training examples of {num_examples}; both must be >= 1')
  cpc = _field(data_config, 'classes_per_client')
  if not isinstance(cpc, numbers.Integral) or isinstance(cpc, bool) or not (
      1 <= cpc <= num_classes):
    raise ValueError(
        f'config.data.classes_per_client={cpc!r} must be an int in '
        f'[1, {num_classes}] for {name}')
  alpha = _field(data_config, 'alpha')
  if not isinstance(alpha, numbers.Real) or not alpha > 0:
    raise ValueError(f'config.data.alpha={alpha!r} must be > 0')
  min_ex = _field(data_config, 'min_examples')
  if not isinstance(min_ex, numbers.Integral) or min_ex < 0:
    raise ValueError(f'config.data.min_examples={min_ex!r} must be an int >= 0')
  if not 1 <= num_clients <= n_train:
    raise ValueError(
        f'num_clients={num_clients} must be in [1, {n_train}]: {name} has '
        f'{n_train} training examples (test_fraction={tf})')
  if min_ex * num_clients > n_train:
    raise ValueError(
        f'config.data.min_examples={min_ex} * num_clients={num_clients} '
        f'exceeds the {n_train} training examples of {name}')


def load(data_config: Any, num_clients: int, seed: int) -> FederatedDataset:
  """Loads a dataset, holds out a test set and partitions the rest.

  All examples are shuffled with `np.random.default_rng(seed)` and
  round(test_fraction * N) of them are held out as the test set, stratified
  by label (see `_stratified_holdout`; for mnist_5k with test_fraction 0.2
  that is exactly 100 per class), so test and training label distributions
  match the full data. The rest, in shuffled order, is the training pool,
  split across `num_clients`
  with `config.data.partition`, drawing from the independent generator
  `np.random.default_rng([seed, 1])`. Same config and seed -> identical
  arrays.
  """
  validate(data_config, num_clients)
  if seed < 0:
    raise ValueError(f'seed must be >= 0, got {seed}')
  name = data_config.name
  loader, num_classes, _ = _REGISTRY[name]
  x, y = loader()
  tf = _field(data_config, 'test_fraction')
  n_test, n_train = _split_sizes(len(y), tf)
  if num_clients > n_train:
    raise ValueError(
        f'num_clients={num_clients} exceeds the {n_train} training examples '
        f'of {name}')
  test_idx, train_idx = _stratified_holdout(
      y, n_test, np.random.default_rng(seed))
  method = _field(data_config, 'partition')
  kwargs: dict[str, Any] = {'min_examples': _field(data_config, 'min_examples')}
  if method == 'pathological':
    kwargs['classes_per_client'] = _field(data_config, 'classes_per_client')
  elif method == 'dirichlet':
    kwargs['alpha'] = _field(data_config, 'alpha')
  parts = partition_lib.partition(
      y[train_idx], method, num_clients, np.random.default_rng([seed, 1]),
      **kwargs)
  return FederatedDataset(
      name=name,
      client_x=[x[train_idx[p]] for p in parts],
      client_y=[y[train_idx[p]] for p in parts],
      test_x=x[test_idx],
      test_y=y[test_idx],
      num_classes=num_classes)
