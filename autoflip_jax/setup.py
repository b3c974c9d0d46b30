"""The config, resolved once at the boundary into a typed `Setup` that is passed down.

`resolve(config)` takes a validated config (`config_checks.validate_config`, which the runner
calls once, before any data is read), loads the federated dataset, builds the model ONCE and
checks that it accepts the data
(`jax.eval_shape`, no compile), then fixes everything a run derives from the config: the apply
function, the model's structured units, the kernels' output positions (FLOP accounting), the
chunk layout of clients and of variants for this backend, the clients mesh, the packer of
client arrays, the evaluator, and the variants (seeds, Tp thresholds). Nothing below this module
reads the config to decide those again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, config_checks, federated, local, masks, models, server
from autoflip_jax import layout, sharding
from autoflip_jax import data as data_lib
from autoflip_jax.algorithms import Context, autoflip

PyTree = Any
WARMUP_STREAM = 4  # fold_in tag of the warm-up's key, and numpy stream of its client
INIT_STREAM = 2  # fold_in tag of the key every algorithm's `init` gets (`init_key`)
BYZANTINE_STREAM = 6  # numpy stream of the clients that send crafted updates


def byzantine_clients(num_clients: int, fraction: float, seed: int) -> tuple[int, ...]:
  """The clients that send crafted updates whenever sampled (`config.attack.update_fraction`):
  the first round(fraction · clients) of a permutation drawn from the data seed, so every
  training seed and algorithm of a run faces the same attackers. Sorted."""
  count = int(round(fraction * num_clients))
  order = np.random.default_rng([seed, BYZANTINE_STREAM]).permutation(num_clients)
  return tuple(sorted(int(k) for k in order[:count]))


def init_key(seed: int) -> jax.Array:
  """The key of a training seed's work before round 1 (`Algorithm.init`, the chain)."""
  return jax.random.fold_in(jax.random.key(seed), INIT_STREAM)


def warmup_client(num_clients: int, seed: int) -> int:
  """The client whose data warms θ0 up (`config.warmup_epochs`), fixed by the seed."""
  return int(np.random.default_rng([seed, WARMUP_STREAM]).integers(num_clients))


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
  """Everything a run derives from its config (see the module docstring)."""
  config: Any
  dataset: Any                  # data.FederatedDataset
  model: Any                    # the Flax module
  apply_fn: Callable            # (params, x) -> logits
  units: Sequence[models.Unit]  # the model's structured units
  params_like: PyTree           # the params' shapes and dtypes (ShapeDtypeStructs)
  positions: dict               # kernel path -> output positions per example
  clients_per_chunk: int        # resolved layout of a cohort (federated.resolve_chunk)
  variants_per_chunk: int       # 0: variants vmapped; 1: one after another in the program
  mesh: jax.sharding.Mesh | None
  pack: 'Packer'                # pack(ids) -> (ClientData, num_examples), placed on the mesh
  evaluate: Callable            # evaluate(params) -> (test accuracy, mean test loss)
  seeds: tuple[int, ...]        # training seeds, side by side
  tps: tuple[float, ...]        # the Tp sweep's thresholds; () = config.tp alone
  server_tx: Any                # the server optimizer (`server.from_config`; None: FedAvg)
  explore_chunk: int | None = None  # the exploration's chunk when `memory.fit` chose its own
  layout: dict = dataclasses.field(default_factory=dict)    # what `memory.fit` chose, and why
  _params0: dict = dataclasses.field(default_factory=dict)  # θ0 by seed, made once
  _chains: dict = dataclasses.field(default_factory=dict)   # the chained exploration by seed

  def params0(self, seed: int) -> PyTree:
    """θ0 of a training seed: the model initialised with `fold_in(key(seed), 0)`, then, with
    `config.warmup_epochs`, trained on one client (`warmup_client`) as the reference code does.
    The same θ0 for every algorithm of the run."""
    if seed not in self._params0:
      x = jnp.zeros((1,) + self.dataset.input_shape, self.dataset.test_x.dtype)
      key = jax.random.fold_in(jax.random.key(seed), 0)
      params = jax.jit(self.model.init)(key, x)['params']
      if self.config.warmup_epochs:
        params = self._warm_up(params, seed)
      self._params0[seed] = params
    return self._params0[seed]

  def _warm_up(self, params: PyTree, seed: int) -> PyTree:
    config = self.config
    client = warmup_client(config.num_clients, seed)
    data, _ = self.pack(np.array([client]), place=False)
    train = layout.jit(lambda p, d, k: local.train(
        p, masks.ones_mask(p), d, k, apply_fn=self.apply_fn, optimizer=config.optimizer,
        learning_rate=config.learning_rate, epochs=config.warmup_epochs,
        max_steps=config.max_local_steps).params)
    key = jax.random.fold_in(jax.random.key(seed), WARMUP_STREAM)
    return train(params, jax.tree.map(lambda a: a[0], data), key)

  def chain(self, seed: int):
    """The seed's chained exploration from its θ0 (`config.exploration_chain`;
    `autoflip.run_chain` with `init_key`), run once and shared by every algorithm of the run:
    (θ0, `exploration.Chain`, seconds)."""
    if seed not in self._chains:
      self._chains[seed] = autoflip.run_chain(self.context(seed), self.params0(seed),
                                              init_key(seed))
    return self._chains[seed]

  def start_params(self, seed: int) -> PyTree:
    """The model an algorithm without a start of its own begins from: θ0, or with
    `exploration_chain='all'` or `'start'` the chain's last model (under 'all' the same
    AutoFLIP starts from; under 'start' the model AutoFLIP's explorers explore)."""
    if self.config.exploration_chain in autoflip.CHAIN_STARTS_ALL:
      return self.chain(seed)[1].params
    return self.params0(seed)

  def round_fn(self, num_variants: int = 1, *, mask_fn: Callable | None = None,
               track_grad_sq: bool = False, shrink_plan: Any = None,
               per_variant_data: bool | None = None, clients_per_chunk: int | None = None,
               variants_per_chunk: int | None = None, max_steps: int | None = None):
    """The jitted round this config runs (`federated.make_variant_round_fn`): the config's
    local optimizer, epochs, server optimizer, DP-FedAvg and step cap, this setup's layout.
    The runner, the memory check and the benchmarks all build their round here; the keywords
    override the layout (a benchmark's or `memory.fit`'s candidate) or add what an algorithm
    needs (its mask rule, PruneFL's squared gradients, a shrinking plan)."""
    config = self.config
    pick = lambda value, default: default if value is None else value
    return federated.make_variant_round_fn(
        self.apply_fn, num_variants=num_variants, optimizer=config.optimizer,
        local_epochs=config.local_epochs, mask_fn=mask_fn,
        clients_per_chunk=pick(clients_per_chunk, self.clients_per_chunk),
        track_grad_sq=track_grad_sq,
        per_variant_data=pick(per_variant_data, len(self.seeds) > 1),
        variants_per_chunk=pick(variants_per_chunk, self.variants_per_chunk),
        server_tx=self.server_tx, dp_clip=float(config.dp.clip),
        dp_noise=float(config.dp.noise_multiplier), shrink_plan=shrink_plan,
        params_like=self.params_like, max_steps=pick(max_steps, config.max_local_steps),
        aggregation=config.update_aggregation, trim=float(config.update_trim),
        bucket=int(config.update_bucket),
        byzantine=byzantine_clients(config.num_clients, config.attack.update_fraction,
                                    config.seed),
        byzantine_factor=float(config.attack.update_factor))

  def server_state(self, params: Sequence[PyTree],
                   round_masks: Sequence[PyTree] | None = None) -> federated.ServerState:
    """Round 0's server state of variants side by side: their θ0, masks (default all kept),
    a zero round counter and the server optimizer's fresh state. New arrays on every call,
    (`federated.stack` copies), so a caller may donate them to a round."""
    if round_masks is None:
      round_masks = [masks.ones_mask(p) for p in params]
    return federated.ServerState(
        federated.stack(params), federated.stack(round_masks),
        jnp.zeros((len(params),), jnp.int32),
        federated.stack([server.init(self.server_tx, p) for p in params]))

  def context(self, seed: int, earlier: Sequence[dict] = ()) -> Context:
    """What an algorithm may read for one training seed (`algorithms.Context`)."""
    chain = (lambda: self.chain(seed)) if self.config.exploration_chain else None
    return Context(self.config, self.apply_fn, self.units, self.positions, self.pack,
                   self.clients_per_chunk if self.explore_chunk is None else self.explore_chunk,
                   seed, tuple(earlier), chain)


def resolve(config) -> Setup:
  """Loads the data and builds the model of a validated `config`: the run's `Setup`."""
  dataset = data_lib.load(config.data, config.num_clients, config.seed)
  model = models.get_model(config, dataset.num_classes)
  x = jax.ShapeDtypeStruct((1,) + dataset.input_shape, dataset.test_x.dtype)
  try:
    params_like = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  except Exception as e:  # noqa: BLE001 -- re-raised with the config named
    raise ValueError(f'config.model={config.model!r} does not accept {dataset.name} inputs of '
                     f'shape {dataset.input_shape}: {e}') from e
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  positions = accounting.kernel_positions(model.apply, params_like, dataset.input_shape,
                                          dataset.test_x.dtype)
  mesh = sharding.client_mesh(config.mesh_devices)
  pack = make_packer(dataset, config.batch_size, mesh, pad=config.pad_steps,
                     max_local_steps=config.max_local_steps)
  # The LSTM gains from a vmapped cohort on a CPU when its clients are alike; with skewed clients
  # one at a time is far faster: each client then skips its padded steps (`local.train`), where
  # in a vmap every client pays for the largest one.
  steps = np.ceil(np.asarray(dataset.client_sizes) / pack.batch_size)
  skewed = steps.size > 0 and steps.max() > 2 * max(1.0, float(np.median(steps)))
  chunk = federated.resolve_chunk(config.clients_per_chunk, config.mesh_devices,
                                  config.model in models.VMAP_CLIENTS_ON_CPU and not skewed)
  return Setup(
      config=config, dataset=dataset, model=model, apply_fn=apply_fn, units=model.units(),
      params_like=params_like, positions=positions, clients_per_chunk=chunk,
      # Where clients go one at a time (auto on a CPU), a vmap over variants would bring back
      # the batched program that is slower there.
      variants_per_chunk=1 if chunk == 1 else 0, mesh=mesh,
      pack=pack,
      evaluate=make_eval_fn(apply_fn, config.eval_batch_size, dataset.test_x, dataset.test_y),
      seeds=config_checks.seed_values(config), tps=config_checks.tp_sweep_values(config),
      server_tx=server.from_config(config))


class Packer:
  """`pack(ids, place=True, steps=None) -> (ClientData, num_examples)`: those clients' padded
  arrays `[clients, steps, batch, ...]`.

  Only the clients asked for are packed (a round's cohort, the explorers), so host and device
  memory grow with the cohort, not with the federation. With a `mesh` the client axis is split
  over its devices; `place=False` returns host arrays.

  The batch is `batch_size`, or the largest client's size when that is smaller: a larger batch
  would only add padded slots to every step (the reference MNIST protocol's clients hold 200
  examples and B = 350; padded, its round took 1.7x as long; capped, each client still takes
  one step on all its examples, the same update).

  Steps (`steps_for`): with `pad='largest'` every call is padded to the dataset's largest client
  (one shape for the run); with `pad='cohort'`, to the steps of the largest client asked for,
  rounded up to a power of two and at most the dataset's (a few shapes, each compiled once). The
  training results are the same (`local.epoch_order` does not depend on the padding).
  `max_local_steps > 0`: `num_examples` counts the examples one epoch trains on,
  min(n, max_local_steps * batch), FedAvg's weights (`local.train` samples the batches).
  """

  def __init__(self, dataset, batch_size: int, mesh=None, *, pad: str = 'largest',
               max_local_steps: int = 0):
    self.dataset, self.mesh, self.pad, self.max_local_steps = dataset, mesh, pad, max_local_steps
    self.sizes = np.asarray(dataset.client_sizes, np.int64)
    largest = int(self.sizes.max()) if self.sizes.size else 1
    self.batch_size = max(1, min(batch_size, largest))
    self.max_steps = data_lib.steps_for(self.sizes, self.batch_size)

  def steps_for(self, ids) -> int:
    """The steps the clients `ids` are padded to (see the class docstring)."""
    if self.pad == 'largest':
      return self.max_steps
    need = data_lib.steps_for(self.sizes[np.asarray(ids, np.int64)], self.batch_size)
    return min(self.max_steps, 1 << (need - 1).bit_length())

  def __call__(self, ids, place: bool = True, steps: int | None = None):
    steps = self.steps_for(ids) if steps is None else steps
    b = data_lib.pack_clients([self.dataset.client_x[i] for i in ids],
                              [self.dataset.client_y[i] for i in ids], self.batch_size, steps)
    n = np.asarray(b.num_examples)
    if self.max_local_steps > 0:
      n = np.minimum(n, self.max_local_steps * self.batch_size).astype(n.dtype)
    out = (local.ClientData(b.x, b.y, b.valid), n)
    return sharding.shard_clients(out, self.mesh) if place else out


def make_packer(dataset, batch_size: int, mesh=None, *, pad: str = 'largest',
                max_local_steps: int = 0) -> Packer:
  """The run's `Packer` (its docstring says how clients are padded)."""
  return Packer(dataset, batch_size, mesh, pad=pad, max_local_steps=max_local_steps)


def make_eval_fn(apply_fn, batch_size: int, x=None, y=None) -> Callable:
  """Returns `evaluate(params[, x, y]) -> (accuracy, mean loss)` over fixed-size padded chunks.

  `x`, `y` default to the given test set.
  """
  @layout.jit
  def chunk(params, xb, yb, valid):
    logits = apply_fn(params, xb)
    total, _ = local.cross_entropy(apply_fn=lambda p, x: logits, params=params, x=xb, y=yb,
                                   valid=valid)
    correct = jnp.sum((jnp.argmax(logits, -1) == yb) & valid)
    return correct, total

  def evaluate(params, x_all=x, y_all=y):
    n = len(y_all)
    correct = loss = 0.0
    for start in range(0, n, batch_size):
      xb, yb = x_all[start:start + batch_size], y_all[start:start + batch_size]
      pad = batch_size - len(yb)
      valid = np.arange(batch_size) < len(yb)
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
      c, l = chunk(params, xb, yb, valid)
      correct, loss = correct + float(c), loss + float(l)
    return correct / n, loss / n
  return evaluate
