"""MNIST, CIFAR-10/100 and EMNIST from prepared TFDS ArrayRecord files.

Read with `tfds` random-access data sources (ArrayRecord, decoded with
numpy and PIL), so TensorFlow is not needed at run time. The data must have
been prepared beforehand, in the array_record file format, on a machine with
internet access and TensorFlow (see `missing_message`).

Labels are read first without decoding any image; images are decoded only
for the indices that `load` keeps, in chunks, straight into the final
float32 [n, H, W, C] arrays in [0, 1]. EMNIST is stored transposed (as the
raw EMNIST files are); its images are transposed back to upright.
`tensorflow_datasets` is imported on first use, so the other sources work
without it installed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from autoflip_jax.data.base import DatasetNotFoundError, Source, Split

_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class TfdsInfo:
  """Static facts about one TFDS dataset, for cheap config checks."""
  num_classes: int
  num_train: int
  num_test: int
  shape: tuple[int, int, int]


# source name -> {TFDS name: facts}; the first entry is the default.
TFDS_NAMES: dict[str, dict[str, TfdsInfo]] = {
    'mnist': {'mnist': TfdsInfo(10, 60_000, 10_000, (28, 28, 1))},
    'cifar10': {'cifar10': TfdsInfo(10, 50_000, 10_000, (32, 32, 3))},
    'cifar100': {'cifar100': TfdsInfo(100, 50_000, 10_000, (32, 32, 3))},
    'emnist': {
        'emnist/byclass': TfdsInfo(62, 697_932, 116_323, (28, 28, 1)),
        'emnist/bymerge': TfdsInfo(47, 697_932, 116_323, (28, 28, 1)),
        'emnist/balanced': TfdsInfo(47, 112_800, 18_800, (28, 28, 1)),
        'emnist/letters': TfdsInfo(37, 88_800, 14_800, (28, 28, 1)),
        'emnist/digits': TfdsInfo(10, 240_000, 40_000, (28, 28, 1)),
        'emnist/mnist': TfdsInfo(10, 60_000, 10_000, (28, 28, 1)),
    },
}


def tfds_name(name: str, override: str = '') -> str:
  """The TFDS dataset read for source `name` (`override` if set)."""
  options = TFDS_NAMES[name]
  chosen = override or next(iter(options))
  if chosen not in options:
    raise ValueError(
        f'config.data.tfds_name={override!r} is not one of {tuple(options)} '
        f'(for config.data.name={name!r})')
  return chosen


def missing_message(name: str, data_dir: str, where: str) -> str:
  shown = data_dir or 'DIR'
  return (
      f'TFDS dataset {name} is not prepared in the array_record format under '
      f'{where}. On a machine with internet access run\n'
      '  pip install tensorflow tensorflow-datasets==4.9.10 '
      'array_record==0.8.6\n'
      f'  tfds build {name} --data_dir={shown} --file_format=array_record\n'
      '(or python -c "import tensorflow_datasets as tfds; '
      f"tfds.data_source('{name}', data_dir='{shown}', "
      "builder_kwargs={'file_format': 'array_record'})\"), copy that folder "
      'to this machine and pass --config.data.data_dir=DIR (empty: TFDS\'s '
      'default, $TFDS_DATA_DIR or ~/tensorflow_datasets).')


def _builder(name: str, data_dir: str) -> Any:
  """The prepared TFDS builder; DatasetNotFoundError if not prepared."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import file_adapters
  builder = tfds.builder(name, data_dir=data_dir or None)
  if not builder.is_prepared():
    raise DatasetNotFoundError(missing_message(
        name, data_dir, f'{builder.data_dir} (nothing there)'))
  if builder.info.file_format not in (
      file_adapters.FileFormat.with_random_access()):
    raise DatasetNotFoundError(missing_message(
        name, data_dir, f'{builder.data_dir} (it holds '
        f'{builder.info.file_format.value} files, which cannot be read '
        'without TensorFlow; rebuild it into a new data_dir)'))
  return builder


def read_labels(source: Any) -> np.ndarray:
  """int32 [len(source)]: every record's label, images left undecoded."""
  y = np.empty(len(source), np.int32)
  for s in range(0, len(y), _CHUNK):
    records = source.__getitems__(list(range(s, min(s + _CHUNK, len(y)))))
    y[s:s + len(records)] = [r['label'] for r in records]
  return y


def image_reader(source: Any, shape: tuple[int, ...], transpose: bool):
  """idx -> float32 [len(idx), *shape] = decoded image / 255."""

  def read(idx: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx, np.int64)
    out = np.empty((len(idx),) + tuple(shape), np.float32)
    for s in range(0, len(idx), _CHUNK):
      records = source.__getitems__(idx[s:s + _CHUNK].tolist())
      images = np.stack([r['image'] for r in records])
      out[s:s + len(records)] = (
          images.transpose(0, 2, 1, 3) if transpose else images)
    np.divide(out, np.float32(255.0), out=out)
    return out

  return read


def load_tfds(name: str, override: str, data_dir: str) -> Source:
  """The official train and test splits of a prepared TFDS dataset."""
  import tensorflow_datasets as tfds
  full = tfds_name(name, override)
  builder = _builder(full, data_dir)
  features = builder.info.features
  shape = tuple(features['image'].shape)
  skip = {'image': tfds.decode.SkipDecoding()}
  splits = []
  for split in ('train', 'test'):
    labels = builder.as_data_source(split=split, decoders=skip)
    images = builder.as_data_source(split=split)
    splits.append(Split(y=read_labels(labels),
                        read_x=image_reader(images, shape, name == 'emnist')))
  return Source(train=splits[0], test=splits[1],
                num_classes=int(features['label'].num_classes))

