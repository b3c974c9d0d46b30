"""FEMNIST (LEAF) with the CNN: the paper's FEMNIST setting (AUTOFLIP.md §4-5).

The reference code's FEMNIST command: LEAF's writers as natural clients (K = 20 of them), C = 0.25
(5 clients a round), R = 200, E = 5, B = 350, Adam lr 3e-4 decayed 0.99 per round, Tp = 0.3, 150
exploration epochs with patience 40 on every client, per-round guidance, 62 classes. Its
`FEMNISTCNN(hidden_size=64)` is our CNN with 64 and 128 filters and a 2048-neuron dense layer
(5x5 convs with padding 1, 2x2 max-pools with padding 1; its dropout 0.1 is left out). The paper
reports -56.5% FLOPs and 1.8x compression. Needs LEAF's FEMNIST JSON in config.data.path.

  python -m experiments.main --config=experiments/configs/femnist_cnn.py --workdir=runs/femnist \
      --config.data.path=/data/leaf/femnist
  python -m experiments.main --config=experiments/configs/femnist_cnn.py:small --workdir=runs/s
"""

from experiments.configs import paper


def get_config(arg: str | None = None):
  config = paper.build('cnn', {'channels': (64, 128), 'hidden': 2048}, num_clients=20,
                       clients_per_round=5, eval_every=20, name='femnist',
                       partition='natural', test_fraction=0.1)
  return paper.variant(config, arg)
