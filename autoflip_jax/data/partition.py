"""Deterministic client partitioners.

`iid`, `pathological` and `dirichlet` take the labels of the training pool
and a `np.random.Generator`, and return one int64 index array per client.
`natural` instead picks clients among a source's natural ones (LEAF users,
play roles) from their group ids. Each array is sorted ascending, the arrays
are pairwise disjoint, and (unless a function documents otherwise) the label
partitioners' union is `arange(len(labels))`. The same inputs and generator
state always give the same split. `cap_examples` then bounds client sizes.
"""

from __future__ import annotations

import numpy as np

LABEL_METHODS = ('iid', 'pathological', 'dirichlet')
METHODS = LABEL_METHODS + ('natural',)


def _check_common(labels: np.ndarray, num_clients: int,
                  min_examples: int) -> np.ndarray:
  """Validates arguments shared by all partitioners; returns labels as 1-D."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f'labels must be a 1-D integer array, got shape {labels.shape} and '
        f'dtype {labels.dtype}.')
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}.')
  if num_clients > len(labels):
    raise ValueError(
        f'num_clients={num_clients} exceeds the number of examples '
        f'({len(labels)}); every client needs at least one example.')
  if min_examples < 0:
    raise ValueError(f'min_examples must be >= 0, got {min_examples}.')
  if min_examples * num_clients > len(labels):
    raise ValueError(
        f'min_examples={min_examples} * num_clients={num_clients} = '
        f'{min_examples * num_clients} exceeds the number of examples '
        f'({len(labels)}).')
  return labels


def _check_sizes(parts: list[np.ndarray], min_examples: int,
                 method: str, hint: str) -> None:
  sizes = np.array([len(p) for p in parts])
  if sizes.min() < min_examples:
    k = int(sizes.argmin())
    raise ValueError(
        f'{method} split impossible: client {k} would get {sizes[k]} examples '
        f'< min_examples={min_examples}. {hint}')


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator,
        min_examples: int = 1) -> list[np.ndarray]:
  """Shuffles all indices and splits them into near-equal parts.

  Client sizes differ by at most one (floor or ceil of n / num_clients).
  """
  labels = _check_common(labels, num_clients, min_examples)
  perm = rng.permutation(len(labels))
  return [np.sort(p).astype(np.int64)
          for p in np.array_split(perm, num_clients)]


def _has_repeat(slots: np.ndarray) -> np.ndarray:
  """Per row of a [rows, k] matrix: whether some value occurs twice."""
  return (np.diff(np.sort(slots, axis=1), axis=1) == 0).any(axis=1)


def _assign_classes(num_clients: int, k: int, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Returns a [num_clients, k] matrix of class slots (positions 0..C-1).

  Each row holds k distinct classes and every class appears either
  floor(num_clients * k / C) or ceil(...) times. The matrix is built from
  concatenated random permutations of the classes; rows that straddle two
  permutations and repeat a class are repaired by random swaps that keep the
  class counts. If repair gets stuck, a random cyclic (round-robin) layout,
  which always satisfies both properties, is used instead.
  """
  reps = -(-num_clients * k // num_classes)
  flat = np.concatenate([rng.permutation(num_classes) for _ in range(reps)])
  slots = flat[:num_clients * k].reshape(num_clients, k)
  for _ in range(num_clients * k):  # Each swap removes one repeat.
    dup_rows = np.flatnonzero(_has_repeat(slots))
    if len(dup_rows) == 0:
      return slots
    r = dup_rows[0]
    row = slots[r]
    values, counts = np.unique(row, return_counts=True)
    a = values[counts > 1][0]
    i = int(np.flatnonzero(row == a)[1])
    ok = ~np.isin(slots, row) & ~(slots == a).any(axis=1, keepdims=True)
    cand = np.argwhere(ok)
    if len(cand) == 0:
      break
    s, j = cand[rng.integers(len(cand))]
    slots[r, i], slots[s, j] = slots[s, j], a
  if not _has_repeat(slots).any():
    return slots
  order = rng.permutation(num_classes)
  cyc = (np.arange(num_clients)[:, None] * k + np.arange(k)) % num_classes
  return order[cyc][rng.permutation(num_clients)]


def pathological(labels: np.ndarray, num_clients: int,
                 classes_per_client: int, rng: np.random.Generator,
                 min_examples: int = 1) -> list[np.ndarray]:
  """Label-skew split where each client holds `classes_per_client` classes.

  This is the pathological non-IID setting of McMahan et al. (2017) used by
  the AutoFLIP reference code, but built so that label coverage is exact
  instead of via contiguous label-sorted shards (which can straddle a class
  boundary and give a client up to k + 1 labels):

  1. Each client is assigned k = `classes_per_client` distinct classes
     (among the C classes present in `labels`) such that every class is held
     by floor(num_clients * k / C) or ceil(...) clients; the assignment is
     random (see `_assign_classes`).
  2. Each class's indices are shuffled and split into near-equal parts, one
     per client holding that class (holder order is random).

  Hence when num_clients * k is a multiple of C and classes are balanced,
  all clients get the same number of examples; e.g. 10 balanced classes,
  20 clients, k = 2 gives every client exactly 2 labels and n / 20 examples.
  A client ends up with exactly k distinct labels whenever every class has
  at least as many examples as clients holding it.

  Exception to full coverage: if num_clients * k < C, some classes are held
  by no client and their examples are left out of every part.
  """
  labels = _check_common(labels, num_clients, min_examples)
  classes = np.unique(labels)
  if not 1 <= classes_per_client <= len(classes):
    raise ValueError(
        f'classes_per_client must be in [1, {len(classes)}] (the number of '
        f'distinct labels), got {classes_per_client}.')
  slots = _assign_classes(num_clients, classes_per_client, len(classes), rng)
  parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
  for c_pos, c in enumerate(classes):
    holders = np.flatnonzero((slots == c_pos).any(axis=1))
    if len(holders) == 0:
      continue
    idx = rng.permutation(np.flatnonzero(labels == c))
    for h, chunk in zip(rng.permutation(holders),
                        np.array_split(idx, len(holders))):
      parts[h].append(chunk)
  out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
  _check_sizes(out, min_examples, 'pathological',
               'Lower num_clients or min_examples, or raise '
               'classes_per_client.')
  return out


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float,
              rng: np.random.Generator, min_examples: int = 1,
              max_tries: int = 100) -> list[np.ndarray]:
  """Label-skew split with per-class Dirichlet(alpha) client proportions.

  The scheme of Hsu et al. (2019): for each class, proportions
  p ~ Dir(alpha * 1_num_clients) are drawn and the class's shuffled indices
  are cut at floor(cumsum(p) * n_class). Smaller alpha gives more skew. The
  whole draw is repeated (up to `max_tries` times) until every client has at
  least `min_examples` examples.
  """
  labels = _check_common(labels, num_clients, min_examples)
  if not alpha > 0:
    raise ValueError(f'alpha must be > 0, got {alpha}.')
  if max_tries < 1:
    raise ValueError(f'max_tries must be >= 1, got {max_tries}.')
  classes = np.unique(labels)
  by_class = [np.flatnonzero(labels == c) for c in classes]
  for _ in range(max_tries):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for idx in by_class:
      idx = rng.permutation(idx)
      p = rng.dirichlet(np.full(num_clients, float(alpha)))
      cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
      for k, chunk in enumerate(np.split(idx, cuts)):
        parts[k].append(chunk)
    out = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
    if min(len(p) for p in out) >= min_examples:
      return out
  raise ValueError(
      f'dirichlet split impossible: after max_tries={max_tries} draws with '
      f'alpha={alpha}, some client still had < min_examples={min_examples} '
      'examples. Increase alpha, lower num_clients or min_examples, or raise '
      'max_tries.')


def natural(groups: np.ndarray, num_clients: int, rng: np.random.Generator,
            min_examples: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
  """Picks `num_clients` of the natural clients named by `groups`.

  Eligible are the group ids with at least max(min_examples, 1) examples;
  `num_clients` of them are drawn without replacement by `rng` and returned
  in ascending id order, each with all of its example indices.

  Args:
    groups: int [n] natural client id of every example of the pool.

  Returns:
    (parts, chosen): parts[k] is the sorted int64 indices of client
    chosen[k]'s examples; chosen is an int64 [num_clients] array of ids.

  Raises:
    ValueError: fewer than `num_clients` eligible natural clients.
  """
  groups = np.asarray(groups)
  if groups.ndim != 1 or not np.issubdtype(groups.dtype, np.integer):
    raise ValueError(f'groups must be a 1-D integer array, got shape '
                     f'{groups.shape} and dtype {groups.dtype}.')
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}.')
  ids, counts = np.unique(groups, return_counts=True)
  eligible = ids[counts >= max(min_examples, 1)]
  if len(eligible) < num_clients:
    raise ValueError(
        f'natural split impossible: num_clients={num_clients} but only '
        f'{len(eligible)} natural clients have >= min_examples='
        f'{max(min_examples, 1)} training examples. Lower num_clients or '
        'min_examples.')
  chosen = np.sort(rng.choice(eligible, num_clients, replace=False))
  order = np.argsort(groups, kind='stable')
  starts = np.searchsorted(groups[order], chosen, side='left')
  ends = np.searchsorted(groups[order], chosen, side='right')
  parts = [np.sort(order[a:b]).astype(np.int64) for a, b in zip(starts, ends)]
  return parts, chosen.astype(np.int64)


def cap_examples(parts: list[np.ndarray], max_examples: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
  """Keeps a random subset of at most `max_examples` indices per client.

  0 means no cap. Clients at or below the cap are returned unchanged; a
  larger client keeps `max_examples` indices drawn without replacement by
  `rng` (in client order), sorted ascending. Bounding the largest client
  bounds the padded steps that every client is run for.
  """
  if max_examples < 0:
    raise ValueError(f'max_examples must be >= 0, got {max_examples}.')
  if max_examples == 0:
    return list(parts)
  return [p if len(p) <= max_examples
          else np.sort(rng.choice(p, max_examples, replace=False))
          for p in parts]


def partition(labels: np.ndarray, method: str, num_clients: int,
              rng: np.random.Generator, **kwargs) -> list[np.ndarray]:
  """Dispatches to `iid`, `pathological` or `dirichlet` by name.

  `kwargs` are passed through (e.g. `classes_per_client`, `alpha`,
  `min_examples`). `natural` works on group ids, not labels: call `natural`.
  """
  fns = {'iid': iid, 'pathological': pathological, 'dirichlet': dirichlet}
  if method == 'natural':
    raise ValueError('The natural partition needs natural client ids; call '
                     'partition.natural(groups, ...) instead.')
  if method not in fns:
    raise ValueError(
        f'Unknown partition method {method!r}; valid names are {METHODS}.')
  return fns[method](labels, num_clients=num_clients, rng=rng, **kwargs)
