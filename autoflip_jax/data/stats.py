"""How a FederatedDataset is spread over its clients: numbers and a figure.

`client_stats` counts examples and labels per client; `save_client_stats`
writes them to `client_stats.json` and draws `client_stats.png` in the
workdir. The figure is drawn on a bare matplotlib `Figure` (Agg canvas), so
no pyplot state or global backend is touched.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

JSON_NAME = 'client_stats.json'
PNG_NAME = 'client_stats.png'


def label_histogram(dataset: Any) -> np.ndarray:
  """int64 [num_clients, num_classes]: count of each label per client."""
  return np.stack([
      np.bincount(np.asarray(y, np.int64), minlength=dataset.num_classes)
      for y in dataset.client_y]) if dataset.client_y else np.zeros(
          (0, dataset.num_classes), np.int64)


def client_stats(dataset: Any) -> dict[str, Any]:
  """Per-client example counts and label histograms, as plain JSON types.

  Keys: name, num_clients, num_classes, input_shape, input_dtype,
  num_train_examples, num_test_examples, client_sizes [clients],
  client_names (empty unless natural clients), labels_per_client (distinct
  labels held), label_histogram [clients][classes],
  test_label_histogram [classes], and size_summary (min, median, mean, max
  of client_sizes).
  """
  hist = label_histogram(dataset)
  sizes = np.asarray(dataset.client_sizes, np.int64)
  summary = {'min': 0, 'median': 0.0, 'mean': 0.0, 'max': 0}
  if len(sizes):
    summary = {'min': int(sizes.min()), 'median': float(np.median(sizes)),
               'mean': float(sizes.mean()), 'max': int(sizes.max())}
  return {
      'name': dataset.name,
      'num_clients': int(dataset.num_clients),
      'num_classes': int(dataset.num_classes),
      'input_shape': list(dataset.input_shape),
      'input_dtype': str(dataset.test_x.dtype),
      'num_train_examples': int(sizes.sum()),
      'num_test_examples': int(len(dataset.test_y)),
      'client_sizes': sizes.tolist(),
      'client_names': list(getattr(dataset, 'client_names', []) or []),
      'labels_per_client': (hist > 0).sum(axis=1).tolist(),
      'label_histogram': hist.tolist(),
      'test_label_histogram': np.bincount(
          np.asarray(dataset.test_y, np.int64),
          minlength=dataset.num_classes).tolist(),
      'size_summary': summary,
  }


def _figure(stats: dict[str, Any]):
  """Two panels: examples per client (bars) and label shares (heat map)."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator
  hist = np.asarray(stats['label_histogram'], np.float64).reshape(
      -1, stats['num_classes'])
  sizes = np.asarray(stats['client_sizes'])
  share = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
  fig = Figure(figsize=(12, 4.5), layout='constrained')
  ax_n, ax_h = fig.subplots(1, 2, width_ratios=(1, 1.3))
  ax_n.bar(np.arange(len(sizes)), sizes, width=1.0, color='tab:blue')
  ax_n.set_xlabel('client')
  ax_n.set_ylabel('training examples')
  s = stats['size_summary']
  ax_n.set_title(f"{stats['name']}: {stats['num_clients']} clients, "
                 f"{stats['num_train_examples']} examples "
                 f"(min {s['min']}, median {s['median']:.0f}, max {s['max']})",
                 fontsize=9)
  image = ax_h.imshow(share, aspect='auto', interpolation='nearest',
                      cmap='viridis', vmin=0.0, vmax=max(share.max(), 1e-9))
  ax_h.set_xlabel('label')
  ax_h.set_ylabel('client')
  ax_h.set_title('share of each label in a client\'s examples', fontsize=9)
  fig.colorbar(image, ax=ax_h, label='share')
  for axis in (ax_n.xaxis, ax_h.xaxis, ax_h.yaxis):
    axis.set_major_locator(MaxNLocator(integer=True))
  return fig


def save_client_stats(dataset: Any, workdir: str) -> list[str]:
  """Writes client_stats.json and client_stats.png into `workdir`.

  Returns the two paths written, JSON first.
  """
  os.makedirs(workdir, exist_ok=True)
  stats = client_stats(dataset)
  json_path = os.path.join(workdir, JSON_NAME)
  with open(json_path, 'w', encoding='utf-8') as f:
    json.dump(stats, f)
  png_path = os.path.join(workdir, PNG_NAME)
  _figure(stats).savefig(png_path, dpi=100)
  return [json_path, png_path]
