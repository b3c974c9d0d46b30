"""CIFAR-100 with the CIFAR ResNet-18 (GroupNorm): the paper's CIFAR-100 ResNet setting.

The reference code's CIFAR-100 command: K = 20 clients with a Dirichlet split of concentration
1.0, C = 0.05 (one client a round), R = 200, E = 5, B = 350, Adam lr 3e-4 decayed 0.99 per round,
Tp = 0.3, 150 exploration epochs with patience 40 on every client, per-round guidance. The paper
reports 0.987 accuracy for AutoFLIP vs 0.918 for FedAvg and 7.8 -> 4.1 GFLOPs (AUTOFLIP.md §5).
Needs TFDS `cifar100` (config.data.data_dir).

  python -m experiments.main --config=experiments/configs/cifar100_resnet.py --workdir=runs/c100
  python -m experiments.main --config=experiments/configs/cifar100_resnet.py:small --workdir=runs/s
"""

from experiments.configs import paper


def get_config(arg: str | None = None):
  config = paper.build('resnet18', {'width': 64, 'norm_groups': 2,
                                     'norm_statistics': 'live'}, num_clients=20,
                       clients_per_round=1,  # C = 0.05 of K = 20, as the reference command
                       eval_every=10, name='cifar100', partition='dirichlet', alpha=1.0)
  return paper.variant(config, arg)
