"""Small configs shared by the end-to-end tests."""

import ml_collections

from experiments import overrides as overrides_lib
from experiments.configs import default


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """The default job shrunk to seconds: a 4/8-filter CNN, 4 clients, 2 rounds."""
  config = default.get_config()
  config.model_config = ml_collections.ConfigDict({'channels': (4, 8), 'hidden': 16})
  config.num_clients = 4
  config.clients_per_round = 2
  config.num_rounds = 2
  config.local_epochs = 1
  config.batch_size = 100
  config.e_exp = 1
  config.memory_check = False  # tests/test_memory.py checks it; here it would only add compiles
  return overrides_lib.apply(config, overrides)
