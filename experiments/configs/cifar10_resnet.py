"""CIFAR-10 with the CIFAR ResNet-18 (GroupNorm): the paper's CIFAR-10 setting (AUTOFLIP.md §4-5).

The reference code's CIFAR-10 command: K = 20 clients with a pathological split of 2 classes
each, C = 0.25 (5 clients a round), R = 200 rounds, E = 5 local epochs, B = 350, Adam lr 3e-4
decayed 0.99 per round, Tp = 0.3, 150 exploration epochs with patience 40 on every client, and
per-round guidance from the sampled clients (the reference's behaviour when all clients explore).
Needs TFDS `cifar10` (config.data.data_dir).

  python -m experiments.main --config=experiments/configs/cifar10_resnet.py --workdir=runs/c10
  python -m experiments.main --config=experiments/configs/cifar10_resnet.py:small --workdir=runs/s

`:small` is the CI-sized variant: a width-8 ResNet-18 on the embedded MNIST-5k images, 3 rounds
of 4 clients, 2 exploration epochs on 5 clients; about a minute on 2 CPU cores.
"""

import ml_collections

from experiments.configs import default
from experiments.configs import mnist_paper


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model = 'resnet18'
  config.model_config = ml_collections.ConfigDict({'width': 64, 'norm_groups': 2})
  config.data.name = 'cifar10'
  config.data.partition = 'pathological'
  config.data.classes_per_client = 2
  config.num_clients = 20
  config.clients_per_round = 5
  mnist_paper.reference_schedule(config)
  config.eval_every = 10
  return variant(config, arg)


def variant(config, arg: str | None):
  """Applies the `:small` variant (or none) of an image config; any other name is an error."""
  if arg == 'small':
    small(config)
  elif arg:
    raise ValueError(f'unknown config variant {arg!r}; use :small or nothing')
  return config


def small(config) -> None:
  """The CI-sized variant of an image config, in place: MNIST-5k, a small model, few rounds.

  Everything but the model is the same for every image config, so two configs with the same
  model have the same small variant.
  """
  config.data = default.get_config().data   # the embedded MNIST-5k, 2 classes per client
  if config.model == 'resnet18':
    config.model_config = ml_collections.ConfigDict({'width': 8, 'norm_groups': 2})
  elif config.model == 'efficientnet_b3':
    config.model_config = ml_collections.ConfigDict(
        {'width_mult': 0.25, 'depth_mult': 0.25, 'norm_groups': 2})
  elif config.model == 'cnn':
    config.model_config = ml_collections.ConfigDict({'channels': (8, 16), 'hidden': 64})
  config.num_clients = 20
  config.clients_per_round = 4
  config.num_rounds = 3
  config.local_epochs = 1
  config.batch_size = 32
  config.optimizer = 'adam'
  config.learning_rate = 1e-3
  config.lr_decay = 0.99
  config.tp = 0.3
  config.e_exp = 2
  config.patience = 0
  config.c_exp = 0.25
  config.guidance_per_round = False
  config.eval_every = 1
