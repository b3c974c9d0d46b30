"""The paper's comparison on the default job: AutoFLIP, FedAvg, PruneFL, EFLPrune and the two
controls, in that order, on the same seed, data split, θ0 and client cohorts (docs/baselines.md).

  python -m experiments.compare --config=experiments/configs/compare.py --workdir=runs/compare
  python -m experiments.compare --config=experiments/configs/compare.py --workdir=runs/cmp10 \
      --config.num_rounds=10 --config.target_accuracy=0.5
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.algorithm = 'autoflip,fedavg,prunefl,eflprune,random,magnitude'
  # comparison.md/json report the bytes each algorithm sent up to the first round whose test
  # accuracy is at or above this ('not reached' otherwise).
  config.target_accuracy = 0.6
  return config
