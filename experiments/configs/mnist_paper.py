"""The reference code's MNIST setting (AUTOFLIP.md §4), on the embedded MNIST-5k images.

K = 20 clients, 2 classes each, test fraction 0.2, R = 200 rounds, E = 5 local epochs, C = 0.25,
B = 350, Adam lr 3e-4 decayed 0.99 per round, server momentum 0.9 (FedAvgM), Tp = 0.3, 150
exploration epochs with patience 40 on every client, the mask fixed after the exploration (the
reference rebuilds it every round from the sampled clients' explorations:
`--config.guidance_per_round=True`; docs/reference_protocol.md says why it is off). Hours on 2
CPU cores; minutes on a GPU. `:small` is the CI-sized CNN variant of the image configs
(`paper.small`, the same as `femnist_cnn.py:small`).
"""

from experiments.configs import paper


def get_config(arg: str | None = None):
  config = paper.build('cnn', {'channels': (32, 64), 'hidden': 512}, num_clients=20,
                       clients_per_round=5, eval_every=1, name='mnist_5k',
                       partition='pathological', classes_per_client=2, test_fraction=0.2)
  return paper.variant(config, arg)
