"""What the paper-setting configs share: the reference schedule, the builder and `:small`.

`build` is the default job with a paper setting's model, data, cohort and evaluation interval
and the reference code's schedule (`reference_schedule`); `variant` applies a config's `:small`
variant, by default `small`, the CI-sized image variant. mnist_paper.py, cifar10_resnet.py,
cifar100_resnet.py, cifar100_effnet.py, femnist_cnn.py and shakespeare_lstm.py are built from
them; each keeps its paper setting in its docstring.
"""

from typing import Any, Callable

import ml_collections

from experiments.configs import default


def reference_schedule(config) -> None:
  """The reference code's `command_paper` schedule, in place; every paper-setting config uses it.

  R = 200, E = 5, B = 350, Adam lr 3e-4 decayed 0.99 per round, Tp = 0.3, 150 exploration
  epochs with patience 40 on every client. The mask is built once from the exploration
  (`guidance_per_round=False`): the reference rebuilds its continuous, compounding "mask" every
  round from the cohort's explorations (AUTOFLIP.md §7, most likely a bug), and our binary
  per-round rebuild stays at chance on the reference MNIST protocol (0.16 ± 0.02 over rounds
  41-50, 3 seeds, against 0.55 with the mask fixed; docs/reference_protocol.md); it is an option.
  The server keeps momentum 0.9 (FedAvgM), as the reference's server does (`--beta 0.9` in every
  paper command): on the reference MNIST protocol it lifts FedAvg from 0.62 to 0.72 and AutoFLIP
  from 0.55 to 0.68 (rounds 41-50, 3 seeds). θ0 is only masked (`sparse_init=''`), as in the
  paper and the reference; the default job rescales it (`fan_in`, docs/structured.md).
  """
  config.num_rounds = 200
  config.local_epochs = 5
  config.batch_size = 350
  config.optimizer = 'adam'
  config.learning_rate = 3e-4
  config.lr_decay = 0.99
  config.server_optimizer = 'momentum'
  config.server_momentum = 0.9
  config.tp = 0.3
  config.e_exp = 150
  config.patience = 40
  config.c_exp = 1.0
  config.guidance_per_round = False
  config.sparse_init = ''  # θ0 only masked, as the paper and the reference code


def build(model: str, model_config: dict[str, Any], *, num_clients: int,
          clients_per_round: int, eval_every: int, **data: Any) -> ml_collections.ConfigDict:
  """A paper setting: the default job with this model, cohort and `reference_schedule`.

  Args:
    model, model_config: config.model and config.model_config.
    num_clients, clients_per_round: K and the cohort size (C * K).
    eval_every: rounds between evaluations.
    **data: config.data fields to change, e.g. name='cifar100', partition='dirichlet',
      alpha=1.0; the others keep default.py's values.
  """
  config = default.get_config()
  config.model = model
  config.model_config = ml_collections.ConfigDict(model_config)
  for field, value in data.items():
    if field not in config.data:
      raise KeyError(f'config.data.{field} is not a data field (experiments/configs/default.py)')
    config.data[field] = value
  config.num_clients = num_clients
  config.clients_per_round = clients_per_round
  reference_schedule(config)
  config.eval_every = eval_every
  return config


def small(config) -> None:
  """The CI-sized variant of an image config, in place: MNIST-5k, a small model, few rounds.

  Everything but the model is the same for every image config, so two configs with the same
  model have the same small variant.
  """
  config.data = default.get_config().data   # the embedded MNIST-5k, 2 classes per client
  if config.model == 'resnet18':
    config.model_config = ml_collections.ConfigDict(
        {'width': 8, 'norm_groups': 2, 'norm_statistics': 'live'})
  elif config.model == 'efficientnet_b3':
    config.model_config = ml_collections.ConfigDict(
        {'width_mult': 0.25, 'depth_mult': 0.25, 'norm_groups': 2,
         'norm_statistics': 'live'})
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


def variant(config, arg: str | None,
            small_variant: Callable[[Any], None] = small) -> ml_collections.ConfigDict:
  """Applies `:small` (`small_variant`, in place) or no variant; any other name is an error."""
  if arg == 'small':
    small_variant(config)
  elif arg:
    raise ValueError(f'unknown config variant {arg!r}; use :small or nothing')
  return config
