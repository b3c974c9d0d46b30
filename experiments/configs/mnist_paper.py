"""The reference code's MNIST setting (AUTOFLIP.md §4), on the embedded MNIST-5k images.

K = 20 clients, 2 classes each, test fraction 0.2, R = 200 rounds, E = 5 local epochs, C = 0.25,
B = 350, Adam lr 3e-4 decayed 0.99 per round, Tp = 0.3, 150 exploration epochs with patience 40
on every client, and per-round guidance from the sampled clients' explorations (the reference's
behaviour when all clients explore). Hours on 2 CPU cores; minutes on a GPU.
"""

from experiments.configs import default


def reference_schedule(config) -> None:
  """The reference code's `command_paper` schedule, in place; every paper-setting config uses it.

  R = 200, E = 5, B = 350, Adam lr 3e-4 decayed 0.99 per round, Tp = 0.3, 150 exploration
  epochs with patience 40 on every client, per-round guidance.
  """
  config.num_rounds = 200
  config.local_epochs = 5
  config.batch_size = 350
  config.optimizer = 'adam'
  config.learning_rate = 3e-4
  config.lr_decay = 0.99
  config.tp = 0.3
  config.e_exp = 150
  config.patience = 40
  config.c_exp = 1.0
  config.guidance_per_round = True


def get_config():
  config = default.get_config()
  reference_schedule(config)
  config.clients_per_round = 5
  return config
