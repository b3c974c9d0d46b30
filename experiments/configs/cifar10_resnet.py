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

from experiments.configs import paper


def get_config(arg: str | None = None):
  config = paper.build('resnet18', {'width': 64, 'norm_groups': 2,
                                     'norm_statistics': 'live'}, num_clients=20,
                       clients_per_round=5, eval_every=10, name='cifar10',
                       partition='pathological', classes_per_client=2)
  return paper.variant(config, arg)
