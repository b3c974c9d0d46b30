"""Types shared by the data sources: a split whose inputs are read on demand.

A source returns labels (and natural client ids) for all of its examples
up front, but inputs only for the indices that `load` finally keeps, so the
training pool is never held twice: a TFDS split is decoded only for the
chosen examples, a Shakespeare window is cut out of its role's text only when
it is asked for.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np


class DatasetNotFoundError(FileNotFoundError):
  """A dataset's files are not available locally (message says how to get)."""


class MalformedDataError(ValueError):
  """A dataset's file has the wrong content.

  The message names the file and, where it applies, the user and the field,
  and says what was expected and what was found.
  """


Reader = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """The examples of one split.

  Attributes:
    y: int32 [n] labels.
    read_x: maps an int64 index array idx (ascending) to the inputs x[idx],
      e.g. float32 [len(idx), H, W, C] or int32 [len(idx), 80].
    groups: int32 [n] natural client (user, role) of every example, or None
      when the source has no natural clients.
  """
  y: np.ndarray
  read_x: Reader
  groups: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.y)


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """What a data source provides before holdout and partitioning.

  Attributes:
    train: the training pool (or, when `test` is None, all examples).
    test: the source's own test split; None means `load` holds out a
      stratified test set from `train`.
    num_classes: number of label values.
    group_names: name of each natural client id in `train.groups` (and
      `test.groups`, which share the id space); empty without natural clients.
  """
  train: Split
  test: Split | None
  num_classes: int
  group_names: tuple[str, ...] = ()


def array_reader(x: np.ndarray) -> Reader:
  """Reads rows of an in-memory array: idx -> x[idx] (a copy)."""
  return lambda idx: x[np.asarray(idx, np.int64)]


def blocks_reader(blocks: Sequence[np.ndarray],
                  convert: Callable[[np.ndarray], np.ndarray] = lambda a: a,
                  ) -> Reader:
  """Reads rows of the virtual concatenation of `blocks` (one per client).

  Row i of the concatenation is row i - offset[b] of block b. `convert` is
  applied to the gathered rows (e.g. uint8 codes -> int32). When idx is
  exactly one whole block, `convert(block)` is returned without gathering,
  so an uncapped natural client costs no copy beyond `convert`.
  """
  offsets = np.cumsum([0] + [len(b) for b in blocks])
  empty = convert(blocks[0][:0]) if len(blocks) else np.zeros((0,))

  def read(idx: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx, np.int64)
    if len(idx) == 0:
      return empty.copy()
    which = np.searchsorted(offsets, idx, side='right') - 1
    first = int(which[0])
    if (len(idx) == len(blocks[first]) and idx[0] == offsets[first]
        and idx[-1] == offsets[first + 1] - 1 and which[-1] == first):
      return convert(blocks[first])
    out = np.empty((len(idx),) + empty.shape[1:], empty.dtype)
    for b in np.unique(which):
      sel = which == b
      out[sel] = convert(blocks[b][idx[sel] - offsets[b]])
    return out

  return read


def groups_for(sizes: Sequence[int]) -> np.ndarray:
  """int32 [sum(sizes)]: client id k repeated sizes[k] times."""
  return np.repeat(np.arange(len(sizes), dtype=np.int32),
                   np.asarray(sizes, np.int64))
