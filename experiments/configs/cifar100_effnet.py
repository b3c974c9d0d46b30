"""CIFAR-100 with EfficientNet-B3 (GroupNorm): the paper's CIFAR-100 EfficientNet setting.

The reference code's CIFAR-100 command: K = 20 clients with a Dirichlet split of concentration
1.0, C = 0.05 (one client a round), R = 200, E = 5, B = 350, Adam lr 3e-4 decayed 0.99 per round,
Tp = 0.3, 150 exploration epochs with patience 40 on every client, per-round guidance (the
reference command, used here with the paper's EfficientNet-B3). The paper reports -46.4% FLOPs,
-30.93% communication and 2.1x compression for EfficientNet-B3 (AUTOFLIP.md §5).
Needs TFDS `cifar100` (config.data.data_dir).

  python -m experiments.main --config=experiments/configs/cifar100_effnet.py --workdir=runs/c100e
  python -m experiments.main --config=experiments/configs/cifar100_effnet.py:small --workdir=runs/s
"""

import ml_collections

from experiments.configs import cifar100_resnet
from experiments.configs import paper


def get_config(arg: str | None = None):
  config = cifar100_resnet.get_config()  # the same data and schedule; only the model differs
  config.model = 'efficientnet_b3'
  config.model_config = ml_collections.ConfigDict(
      {'width_mult': 1.2, 'depth_mult': 1.4, 'norm_groups': 2, 'norm_statistics': 'live'})
  return paper.variant(config, arg)
