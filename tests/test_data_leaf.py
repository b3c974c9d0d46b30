"""Tests for LEAF's FEMNIST and Shakespeare JSON folders (tiny fixtures)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoflip_jax import data
from autoflip_jax.data import leaf
from tests.data_helpers import data_config

# FEMNIST users -> (train count, test count).
FEMNIST_USERS = {'f0': (5, 2), 'f1': (1, 1), 'f2': (3, 1), 'f3': (8, 2),
                 'f4': (2, 1)}
TEXT = ("To be, or not to be: that is the question: Whether 'tis nobler in "
        'the mind to suffer The slings and arrows of outrageous fortune~')


def _femnist_pixels(user, split, i):
  """784 LEAF-style values k / 255, k determined by (user, split, i)."""
  k = (np.arange(784) * 3 + 17 * int(user[1:]) + 5 * i + (split == 'test'))
  return (k % 256 / 255).tolist()


def _write(folder, name, users):
  folder.mkdir(parents=True, exist_ok=True)
  blob = {'users': list(users), 'num_samples': [len(d['y'])
                                                for d in users.values()],
          'user_data': users}
  (folder / name).write_text(json.dumps(blob))


@pytest.fixture
def femnist_dir(tmp_path):
  for split, col in (('train', 0), ('test', 1)):
    users = {}
    for u, counts in FEMNIST_USERS.items():
      n = counts[col]
      users[u] = {'x': [_femnist_pixels(u, split, i) for i in range(n)],
                  'y': [(int(u[1:]) * 10 + i) % 62 for i in range(n)]}
    # Two files per folder, as LEAF writes several.
    _write(tmp_path / split, f'a_{split}.json', dict(list(users.items())[:2]))
    _write(tmp_path / split, f'b_{split}.json', dict(list(users.items())[2:]))
  return tmp_path


def _config(name, path, **overrides):
  return data_config(**{'name': name, 'path': str(path),
                        'partition': 'natural', **overrides})


def test_femnist_natural_clients_and_their_test_data(femnist_dir):
  ds = data.load(_config('femnist', femnist_dir, min_examples=3), 3, seed=0)
  # Only f0, f2, f3 have >= 3 training examples; all three are taken.
  assert ds.client_names == ['f0', 'f2', 'f3']
  np.testing.assert_array_equal(ds.client_sizes, [5, 3, 8])
  assert ds.num_classes == 62 and ds.input_shape == (28, 28, 1)
  # Test set: the chosen users' test examples only (2 + 1 + 2).
  assert len(ds.test_y) == 5
  np.testing.assert_array_equal(np.sort(ds.test_y), np.sort([0, 1, 20, 30,
                                                             31]))
  # Pixels are LEAF's values, unchanged (1.0 = white paper, not inverted).
  x = ds.client_x[1]
  assert x.dtype == np.float32
  np.testing.assert_array_equal(
      x[2].reshape(-1), np.float32(_femnist_pixels('f2', 'train', 2)))
  np.testing.assert_array_equal(ds.client_y[2], [30, 31, 32, 33, 34, 35,
                                                 36, 37])


def test_femnist_natural_choice_is_seeded(femnist_dir):
  cfg = _config('femnist', femnist_dir)
  picks = {tuple(data.load(cfg, 2, seed=s).client_names) for s in range(8)}
  assert len(picks) > 1
  assert data.load(cfg, 2, seed=3).client_names == data.load(
      cfg, 2, seed=3).client_names
  assert all(len(p) == 2 and list(p) == sorted(p) for p in picks)


def test_femnist_too_few_natural_clients(femnist_dir):
  with pytest.raises(ValueError, match=r'only 3 natural clients have >= '
                     r'min_examples=3'):
    data.load(_config('femnist', femnist_dir, min_examples=3), 4, seed=0)


def test_femnist_cap_and_label_partition(femnist_dir):
  ds = data.load(_config('femnist', femnist_dir, max_examples_per_client=4),
                 5, seed=0)
  np.testing.assert_array_equal(ds.client_sizes, [4, 1, 3, 4, 2])
  assert set(ds.client_y[3]) <= set(range(30, 38))
  ds = data.load(_config('femnist', femnist_dir, partition='iid'), 2, seed=0)
  assert ds.client_names == []
  assert ds.num_train_examples == 19 and len(ds.test_y) == 7


def test_user_split_test_users_fall_back_to_all(tmp_path):
  for split, users in (('train', ('u0', 'u1')), ('test', ('v0',))):
    _write(tmp_path / split, 'd.json', {
        u: {'x': [_femnist_pixels('f1', split, 0)] * 2, 'y': [1, 2]}
        for u in users})
  ds = data.load(_config('femnist', tmp_path), 2, seed=0)
  assert ds.client_names == ['u0', 'u1']
  np.testing.assert_array_equal(ds.test_y, [1, 2])


def _shakespeare_user(text):
  n = len(text) - leaf.SEQ_LENGTH
  return {'x': [text[i:i + 80] for i in range(n)],
          'y': [text[i + 80] for i in range(n)]}


def test_shakespeare_leaf_json(tmp_path):
  users = {'HAMLET_HAMLET': TEXT, 'HAMLET_OPHELIA': TEXT[::-1]}
  for split, cut in (('train', slice(0, 100)), ('test', slice(100, None))):
    _write(tmp_path / split, 'all.json',
           {u: _shakespeare_user(t[cut] if split == 'train' else t[20:])
            for u, t in users.items()})
  ds = data.load(_config('shakespeare', tmp_path), 2, seed=0)
  assert ds.num_classes == 80
  assert ds.client_names == ['HAMLET_HAMLET', 'HAMLET_OPHELIA']
  x, y = ds.client_x[0], ds.client_y[0]
  assert x.shape == (20, 80) and x.dtype == np.int32 and y.dtype == np.int32
  assert leaf.decode(x[0]) == TEXT[:80]
  assert leaf.ALL_LETTERS[y[0]] == TEXT[80]
  # Test windows come from the test files: 2 * (len(TEXT) - 20 - 80).
  assert len(ds.test_y) == 2 * (len(TEXT) - 100)
  # '~' is outside LEAF's vocabulary: LEAF's one-hot of find() == -1 is the
  # last class.
  assert ds.test_y[len(TEXT) - 101] == 79 == leaf.OOV_INDEX


def test_vocabulary_is_leafs():
  assert leaf.NUM_LETTERS == 80
  assert leaf.ALL_LETTERS[:3] == '\n !' and leaf.ALL_LETTERS[-1] == '}'
  codes = leaf.encode('Ab }\n\u2014~')
  np.testing.assert_array_equal(codes, [25, 54, 1, 79, 0, 79, 79])
  assert leaf.decode(codes[:5]) == 'Ab }\n'


@pytest.mark.parametrize('name', ['femnist', 'shakespeare'])
def test_missing_folder_says_how_to_make_it(tmp_path, name):
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load(_config(name, tmp_path / 'nope'), 2, seed=0)
  message = str(e.value)
  assert f'cd leaf/data/{name} && ./preprocess.sh -s niid --sf 1.0 -k 0 ' \
         '-t sample' in message
  assert '--config.data.path=DIR' in message
  assert 'nope' in message


def test_femnist_without_path_is_missing():
  with pytest.raises(data.DatasetNotFoundError, match='config.data.path is '
                     'empty'):
    data.load(_config('femnist', ''), 2, seed=0)


def test_malformed_leaf_files(tmp_path):
  for split in ('train', 'test'):
    _write(tmp_path / split, 'd.json',
           {'u': {'x': ['too short'], 'y': ['a']}})
  with pytest.raises(data.MalformedDataError,
                     match='must be a string of 80 characters'):
    data.load(_config('shakespeare', tmp_path), 1, seed=0)
  for split in ('train', 'test'):
    _write(tmp_path / split, 'd.json', {'u': {'x': [[2.0] * 784], 'y': [0]}})
  with pytest.raises(data.MalformedDataError,
                     match=r'pixels must lie in \[0, 1\]'):
    data.load(_config('femnist', tmp_path), 1, seed=0)


# A malformed file: the error names the file, the user, the field, and what
# was expected against what was found. Each case writes one bad train file
# next to a good test file.
_PIXELS = [0.5] * 784


def _load_bad(tmp_path, name, text):
  """Loads `name` from a train/d.json holding `text`; returns the error."""
  good = ({'v': {'x': [_PIXELS], 'y': [0]}} if name == 'femnist'
          else {'v': {'x': ['a' * 80], 'y': ['b']}})
  _write(tmp_path / 'test', 'd.json', good)
  (tmp_path / 'train').mkdir()
  (tmp_path / 'train' / 'd.json').write_text(text)
  with pytest.raises(data.MalformedDataError) as e:
    data.load(_config(name, tmp_path), 1, seed=0)
  message = str(e.value)
  assert str(tmp_path / 'train' / 'd.json') in message
  return message


def _blob(user_data):
  return json.dumps({'users': list(user_data), 'user_data': user_data})


def test_malformed_json_names_file_line_and_column(tmp_path):
  text = '{"users": ["u"]\n "user_data": {}}'  # a missing comma on line 1
  message = _load_bad(tmp_path, 'femnist', text)
  assert 'not valid JSON' in message
  assert "Expecting ',' delimiter at line 2 column 2" in message


def test_malformed_top_level_names_the_missing_key(tmp_path):
  message = _load_bad(tmp_path, 'femnist', json.dumps({'users': ['u']}))
  assert "no 'user_data'" in message
  message = _load_bad(tmp_path / 'b', 'femnist', json.dumps(
      {'users': ['u', 'w'], 'user_data': {'u': {'x': [_PIXELS], 'y': [0]}}}))
  assert "user 'w'" in message and "not in 'user_data'" in message


def test_malformed_missing_field(tmp_path):
  message = _load_bad(tmp_path, 'femnist', _blob({'u': {'x': [_PIXELS]}}))
  assert "user 'u'" in message and "no field 'y'" in message


def test_malformed_x_and_y_lengths_differ(tmp_path):
  message = _load_bad(tmp_path, 'femnist',
                      _blob({'u': {'x': [_PIXELS, _PIXELS], 'y': [0]}}))
  assert "user 'u'" in message
  assert "2 examples in 'x' but 1 in 'y'" in message


def test_malformed_femnist_image_size(tmp_path):
  message = _load_bad(tmp_path, 'femnist',
                      _blob({'u': {'x': [_PIXELS, [0.5, 0.5]], 'y': [0, 1]}}))
  assert "user 'u', field 'x'" in message
  assert 'example 1 has 2 values, expected 784 (28x28 pixels)' in message


def test_malformed_femnist_pixels_not_numbers(tmp_path):
  message = _load_bad(tmp_path, 'femnist',
                      _blob({'u': {'x': [['a'] * 784], 'y': [0]}}))
  assert "user 'u', field 'x'" in message and 'numbers' in message


def test_malformed_femnist_label_out_of_range(tmp_path):
  message = _load_bad(tmp_path, 'femnist',
                      _blob({'u': {'x': [_PIXELS, _PIXELS], 'y': [3, 62]}}))
  assert "user 'u', field 'y'" in message
  assert 'example 1 is 62, expected a class in [0, 61]' in message


def test_malformed_femnist_label_not_an_integer(tmp_path):
  message = _load_bad(tmp_path, 'femnist',
                      _blob({'u': {'x': [_PIXELS], 'y': [1.5]}}))
  assert "user 'u', field 'y'" in message and 'integer' in message


def test_malformed_shakespeare_x_length(tmp_path):
  message = _load_bad(tmp_path, 'shakespeare',
                      _blob({'u': {'x': ['a' * 80, 'abc'], 'y': ['b', 'c']}}))
  assert "user 'u', field 'x'" in message
  assert 'example 1 has 3 characters, expected 80' in message


def test_malformed_shakespeare_y_not_one_character(tmp_path):
  message = _load_bad(tmp_path, 'shakespeare',
                      _blob({'u': {'x': ['a' * 80], 'y': ['bc']}}))
  assert "user 'u', field 'y'" in message
  assert 'example 0 has 2 characters, expected 1' in message
