"""Tests for autoflip_jax.data.stats."""

from __future__ import annotations

import json
import os

import numpy as np

from autoflip_jax import data
from autoflip_jax.data import stats


def _dataset(num_classes=4, names=()):
  ys = [np.array([0, 0, 3], np.int32), np.array([], np.int32),
        np.array([1, 2, 2, 2, 1], np.int32)]
  xs = [np.zeros((len(y), 2, 2, 1), np.float32) for y in ys]
  return data.FederatedDataset(
      name='toy', client_x=xs, client_y=ys,
      test_x=np.zeros((4, 2, 2, 1), np.float32),
      test_y=np.array([3, 3, 0, 1], np.int32), num_classes=num_classes,
      client_names=list(names))


def test_client_stats_hand_computed():
  s = stats.client_stats(_dataset(names=('a', 'b', 'c')))
  assert s['client_sizes'] == [3, 0, 5]
  assert s['label_histogram'] == [[2, 0, 0, 1], [0, 0, 0, 0], [0, 2, 3, 0]]
  assert s['labels_per_client'] == [2, 0, 2]
  assert s['test_label_histogram'] == [1, 1, 0, 2]
  assert s['num_train_examples'] == 8 and s['num_test_examples'] == 4
  assert s['size_summary'] == {'min': 0, 'median': 3.0, 'mean': 8 / 3,
                               'max': 5}
  assert s['client_names'] == ['a', 'b', 'c']
  assert s['input_shape'] == [2, 2, 1] and s['input_dtype'] == 'float32'


def test_save_client_stats_writes_json_and_png(tmp_path):
  workdir = str(tmp_path / 'run')
  paths = stats.save_client_stats(_dataset(), workdir)
  assert paths == [os.path.join(workdir, 'client_stats.json'),
                   os.path.join(workdir, 'client_stats.png')]
  with open(paths[0], encoding='utf-8') as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(stats.client_stats(_dataset())))
  with open(paths[1], 'rb') as f:
    png = f.read()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


def test_stats_of_80_class_tokens(tmp_path):
  ys = [np.arange(80, dtype=np.int32), np.full(7, 79, np.int32)]
  ds = data.FederatedDataset(
      name='tokens', client_x=[np.zeros((len(y), 80), np.int32) for y in ys],
      client_y=ys, test_x=np.zeros((1, 80), np.int32),
      test_y=np.array([5], np.int32), num_classes=80)
  s = stats.client_stats(ds)
  assert np.array(s['label_histogram']).shape == (2, 80)
  assert s['labels_per_client'] == [80, 1]
  assert s['input_dtype'] == 'int32'
  assert all(os.path.getsize(p) > 0
             for p in stats.save_client_stats(ds, str(tmp_path)))
