"""Masked FedAvg and the federated round as ONE jitted XLA program (AUTOFLIP.md §3).

A round takes the sampled clients' padded data `[clients, steps, batch, ...]`, trains every client
with `local.train` (`vmap`ped over the client axis, or chunk by chunk: `resolve_chunk`), and
returns the new global state:

    θ_{t+1} = mask ⊙ Σ_k (n_k / Σ_j n_j) θ_k,     θ_k = local training of (mask ⊙ θ_t) on client k,

the example-weighted FedAvg over kept weights (equal to averaging the updates θ_k − θ_t, since the
weights sum to one). Pruned weights are exactly zero in every θ_k and stay exactly zero globally.
Clients with no examples get weight 0; a round with no examples leaves the model unchanged.

FedAvg is the same round with the all-True mask. With a `mask_fn(aux, client_ids, num_examples)`
the round first rebuilds the mask on the device from the algorithm's state `aux` and the round's
cohort (AutoFLIP's per-round guidance), still inside the one program.

The round's PRNG: `fold_in(rng, round)` then `fold_in(., client_id)`, so a client's local shuffle
depends only on the seed, the round and its id, never on its position in the cohort.

Private training (DP-FedAvg, McMahan et al. 2018), when `dp_clip` C > 0: each client's update
Δ_k = θ_k − mask ⊙ θ_t (zero on pruned coordinates) is clipped to L2 norm C,
Δ_k ← Δ_k · min(1, C / ‖Δ_k‖), and the server takes

    θ̄ = mask ⊙ (mask ⊙ θ_t + (Σ_k Δ_k + mask ⊙ N(0, (z C)² I)) / m),

m the cohort size and z = `dp_noise` (0: clipping only). Deviation from FedAvg, on purpose: the
average is uniform over the cohort with a fixed denominator (one client moves the sum by at most
C, whatever its example count), not example-weighted; the noise is drawn only where the mask
keeps weights, so pruned coordinates stay exactly 0. Its key is `fold_in(fold_in(rng,
DP_NOISE_STREAM), round)`. With `dp_clip` = 0 (the default) none of this is traced: the round is
the program it always was. The training loss and PruneFL's squared gradients are not privatised.

Robust aggregation of the updates (`aggregation`, `config.update_aggregation`; Yin et al. 2018,
"Byzantine-robust distributed learning"): instead of the example-weighted mean, the server takes
the coordinate-wise `median` of the cohort's models, or their `trimmed_mean` (each coordinate's
⌊trim · n⌋ largest and smallest values dropped, the rest averaged), over the n clients of the
cohort that have examples. Both are unweighted (an order statistic has no example weights), a
deviation from FedAvg that is the point: a few clients with wrong labels or crafted updates
cannot pull a coordinate beyond the honest clients' values. Pruned coordinates are 0 in every
client's model, so they stay 0. The cohort's models are kept side by side for it (cohort ×
params floats instead of one running sum). `mean` traces none of it.

Bucketing (`bucket` s > 1, `config.update_bucket`; Karimireddy, He & Jaggi 2022, "Byzantine-
robust learning on heterogeneous datasets via bucketing"): before the median or trimmed mean,
the cohort's models are put in a random order (key `fold_in(fold_in(rng, BUCKET_STREAM),
round)`) and averaged s at a time into ⌈n/s⌉ bucket means (`bucket_means`); the order statistic
is then taken over the buckets. Means of s non-IID clients differ less than the clients do, so
the robust aggregate moves towards the mean on honest cohorts, while an attacker still spoils at
most one bucket.

Byzantine clients (threat simulation, `byzantine`: the ids of the clients that attack whenever
they are sampled, `config.attack.update_*`): such a client sends θ_t + f · (θ_k − θ_t) instead
of its model θ_k, f = `byzantine_factor` (−10: its update reversed and ten times larger; the
loss it reports is its honest one). Pruned coordinates stay 0 (θ_t and θ_k are 0 there).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from autoflip_jax import layout, local, server, shrink
from autoflip_jax.masks import apply_mask

PyTree = Any
AGGREGATIONS = ('mean', 'median', 'trimmed_mean')
DP_NOISE_STREAM = 0x7FFF0003  # fold_in tag of DP-FedAvg's noise key (far above any round)
BUCKET_STREAM = 0x7FFF0004  # fold_in tag of the bucketing's random order


class ServerState(NamedTuple):
  """Everything that travels from round to round (and into a checkpoint)."""
  params: PyTree
  mask: PyTree
  round: jax.Array        # int32 scalar: rounds finished
  server_opt: PyTree = ()  # the server optimizer's state (`server.py`; () for plain FedAvg)


class RoundMetrics(NamedTuple):
  train_loss: jax.Array     # example-weighted mean local training loss of the cohort
  client_loss: jax.Array    # [clients] mean local training loss per client
  num_examples: jax.Array   # int32 total real examples in the cohort
  grad_sq: PyTree = ()      # with track_grad_sq: example-weighted mean of the clients' sums of
                            # squared dense gradients over their local steps (PruneFL)


def example_weights(num_examples: jax.Array) -> jax.Array:
  """FedAvg weights n_k / sum_j n_j; all zero when the cohort has no examples."""
  n = num_examples.astype(jnp.float32)
  return n / jnp.maximum(jnp.sum(n), 1.0)


def fedavg(client_params: PyTree, num_examples: jax.Array, mask: PyTree,
           fallback: PyTree) -> PyTree:
  """Example-weighted average over the leading client axis, masked; `fallback` if no examples."""
  w = example_weights(num_examples)
  avg = jax.tree.map(lambda p: jnp.tensordot(w, p, axes=1), client_params)
  return _finish(avg, num_examples, mask, fallback)


def _finish(avg: PyTree, num_examples: jax.Array, mask: PyTree, fallback: PyTree) -> PyTree:
  has_data = jnp.sum(num_examples) > 0
  avg = jax.tree.map(lambda a, f: jnp.where(has_data, a, f), avg, fallback)
  return apply_mask(avg, mask)


def trim_count(trim: float, n):
  """k = ⌊trim · n⌋, the clients a trimmed mean cuts at each end of n, with a margin against
  float rounding just under an integer (2.9999999). A Python int gives an int (config checks,
  no device work); a count on the device gives an int32 array."""
  if isinstance(n, int):
    return math.floor(trim * n + 1e-4)
  return jnp.floor(trim * n.astype(jnp.float32) + 1e-4).astype(jnp.int32)


def num_buckets(n: int, size: int) -> int:
  """⌈n / size⌉: the buckets of `bucket_means` for n rows."""
  return -(-n // size)


def bucket_means(stacked: PyTree, valid: jax.Array, size: int,
                 key: jax.Array) -> tuple[PyTree, jax.Array]:
  """Bucketing (Karimireddy et al. 2022): the valid rows of the leading axis, in a random order
  drawn from `key`, averaged `size` at a time (unweighted; the last bucket holds what is left).

  Returns the bucket means `[⌈K/size⌉, ...]` (K the leading axis) and bool `[⌈K/size⌉]`, the
  buckets that hold at least one valid row: with n valid rows, the first ⌈n/size⌉. Rows that
  are not valid belong to no bucket; a bucket without rows is zeros.
  """
  rows = valid.shape[0]
  count = num_buckets(rows, size)
  # valid rows first, each in a random place among them; then the rest
  order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, (rows,)), 2.0))
  bucket = jnp.argsort(order) // size  # each row's bucket: its position in the order / size
  member = (bucket[None, :] == jnp.arange(count)[:, None]) & valid[None, :]  # [count, rows]
  sizes = jnp.sum(member, axis=1)
  weights = member.astype(jnp.float32) / jnp.maximum(sizes, 1)[:, None]
  means = jax.tree.map(lambda p: jnp.tensordot(weights, p.astype(jnp.float32),
                                               axes=1).astype(p.dtype), stacked)
  return means, sizes > 0


def robust_average(client_params: PyTree, num_examples: jax.Array, aggregation: str,
                   trim: float = 0.0, bucket: int = 1,
                   key: jax.Array | None = None) -> PyTree:
  """Coordinate-wise `median` or `trimmed_mean` over the leading client axis (module docstring).

  Only clients with examples count: the others are sorted to the end (+inf) and the order
  statistics are taken among the first n = their number, a count known only on the device.
  A cohort with no examples gives zeros (the round then keeps its model: `_finish`). With
  `bucket` > 1 the order statistic is over `bucket_means` of that many clients (`key`: their
  random order), and the trimmed mean's cut counts buckets.
  """
  if aggregation not in AGGREGATIONS[1:]:
    raise ValueError(f'robust_average: aggregation={aggregation!r} is not one of '
                     f'{AGGREGATIONS[1:]}')
  valid = num_examples > 0
  if bucket > 1:
    if key is None:
      raise ValueError('robust_average: bucketing needs a key for its random order')
    client_params, valid = bucket_means(client_params, valid, bucket, key)
  n = jnp.sum(valid.astype(jnp.int32))
  cohort = valid.shape[0]
  k = trim_count(trim, n)

  def one(p):
    lead = (cohort,) + (1,) * (p.ndim - 1)
    ordered = jnp.sort(jnp.where(valid.reshape(lead), p, jnp.inf), axis=0)
    if aggregation == 'median':
      lo = jax.lax.dynamic_index_in_dim(ordered, jnp.maximum((n - 1) // 2, 0), 0, keepdims=False)
      hi = jax.lax.dynamic_index_in_dim(ordered, jnp.maximum(n // 2, 0), 0, keepdims=False)
      out = 0.5 * (lo + hi)
    else:
      pos = jnp.arange(cohort).reshape(lead)
      keep = (pos >= k) & (pos < n - k)
      out = jnp.sum(jnp.where(keep, ordered, 0.0), axis=0) / jnp.maximum(n - 2 * k, 1)
    return jnp.where(n > 0, out, jnp.zeros_like(out)).astype(p.dtype)
  return jax.tree.map(one, client_params)


def clip_update(update: PyTree, clip: float) -> PyTree:
  """`update · min(1, clip / ‖update‖)` (L2 norm over the whole tree)."""
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(update)))
  scale = jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-30))
  return jax.tree.map(lambda x: x * scale, update)


def dp_noise_tree(like: PyTree, mask: PyTree, key: jax.Array, std: float) -> PyTree:
  """N(0, std²) on the kept coordinates of `mask`, exactly 0 elsewhere; one key per leaf."""
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, len(leaves))
  noise = jax.tree.unflatten(treedef, [std * jax.random.normal(k, x.shape, x.dtype)
                                       for k, x in zip(keys, leaves)])
  return apply_mask(noise, mask)


def resolve_chunk(clients_per_chunk: int, mesh_devices: int = 1,
                  vmap_on_cpu: bool = False) -> int:
  """`config.clients_per_chunk` for this backend: 0 (auto) is 1 on a CPU without a mesh, else 0.

  On a CPU the cores are already busy inside one client's matmuls, and a vmapped cohort only
  makes every activation and im2col copy `clients` times larger than the caches: one client at
  a time, inside the same program, is faster (`benchmarks/round_throughput.py`). Models whose
  step is many small sequential matmuls (`vmap_on_cpu`: the LSTM) gain from the vmap instead.
  GPUs and TPUs need the whole cohort in one vmap to fill the device; a mesh splits it.
  """
  if (clients_per_chunk == 0 and jax.default_backend() == 'cpu' and mesh_devices <= 1
      and not vmap_on_cpu):
    return 1
  return clients_per_chunk


def vmap_clients(fn: Callable, chunk: int) -> Callable:
  """`fn` over a leading axis of `chunk` clients: `vmap`, or for one client a plain call.

  A program with a size-1 batch axis runs markedly slower on XLA:CPU than the same program
  without it (its dots and im2col copies miss their fast paths), so chunks of one are unbatched.
  """
  if chunk != 1:
    return _vmapped(fn)

  def one(*args):
    return jax.tree.map(lambda a: a[None], fn(*jax.tree.map(lambda a: a[0], args)))
  return one


def _vmapped(fn: Callable) -> Callable:
  """`jax.vmap(fn)`, traced with `layout.vmapped_models` (the models then pick the layers that
  vmap well: the patch convolution rather than a CPU's native one)."""
  batched = jax.vmap(fn)

  def call(*args):
    with layout.vmapped_models():
      return batched(*args)
  return call


def chunked_map(fn: Callable, xs: tuple, chunk: int) -> PyTree:
  """`fn(*x)` over the leading axis of the arrays in `xs` (clients, thresholds), `chunk` at a time.

  0: one `vmap`; 1: a `lax.map` of unbatched calls; k: `lax.map` over `vmap`ped chunks of k
  (the remainder in one more vmap). Memory grows with the chunk, not with the axis.
  """
  if chunk == 0:
    return _vmapped(fn)(*xs)
  if chunk == 1:
    return jax.lax.map(lambda a: fn(*a), xs)
  with layout.vmapped_models():
    return jax.lax.map(lambda a: fn(*a), xs, batch_size=chunk)


def round_body(state: ServerState, data: local.ClientData, num_examples: jax.Array,
               client_ids: jax.Array, rng: jax.Array, learning_rate: jax.Array, aux: PyTree,
               *, apply_fn, optimizer: str, local_epochs: int, mask_fn: Callable | None = None,
               clients_per_chunk: int = 0, track_grad_sq: bool = False,
               server_tx=None, dp_clip: float = 0.0, dp_noise: float = 0.0,
               max_steps: int = 0, aggregation: str = 'mean', trim: float = 0.0,
               byzantine: tuple[int, ...] = (), byzantine_factor: float = -10.0,
               bucket: int = 1) -> tuple[ServerState, RoundMetrics]:
  """One federated round; `make_round_fn` jits it. See the module docstring.

  The cohort is trained in chunks of `clients_per_chunk` clients (0: all at once): a `lax.scan`
  over chunks, `vmap` inside a chunk, and the weighted sum of the chunk's models added to a
  running total. Memory then grows with the chunk, not the cohort; one chunk is plain `vmap`,
  and chunks of one client are not batched at all (`vmap_clients`). Here 0 means the whole
  cohort; `resolve_chunk` turns a config's 0 (auto) into the layout for the backend.
  `server_tx` (`server.make`) turns the masked average into the next global model; None is
  FedAvg, the average itself. `dp_clip`, `dp_noise`: DP-FedAvg (module docstring; 0 = off).
  `max_steps`: `config.max_local_steps`, the cap on a client's steps per epoch (`local.train`;
  0 = none); `num_examples` are then the examples an epoch trains on (the packer caps them).
  `aggregation`, `trim`: the robust average of the cohort's models (`robust_average`; 'mean' is
  FedAvg's example-weighted mean). Not with DP-FedAvg (its sensitivity is the sum's).
  `bucket`: with a robust `aggregation`, the clients averaged per bucket first (module
  docstring; 1 = no bucketing).
  `byzantine`, `byzantine_factor`: the attacking clients' ids and their update's factor (module
  docstring; () = none, nothing traced).
  """
  if aggregation != 'mean' and dp_clip > 0:
    raise ValueError(f'aggregation={aggregation!r} cannot be combined with DP-FedAvg (dp_clip > 0)')
  if aggregation not in AGGREGATIONS:
    raise ValueError(f'aggregation={aggregation!r} is not one of {AGGREGATIONS}')
  mask = mask_fn(aux, client_ids, num_examples) if mask_fn is not None else state.mask
  global_params = apply_mask(state.params, mask)
  round_key = jax.random.fold_in(rng, state.round)

  def client(d, cid):
    out = local.train(global_params, mask, d, jax.random.fold_in(round_key, cid),
                      apply_fn=apply_fn, optimizer=optimizer, learning_rate=learning_rate,
                      epochs=local_epochs, track_grad_sq=track_grad_sq, max_steps=max_steps)
    return out.params, out.loss, out.grad_sq

  cohort = client_ids.shape[0]
  chunk = clients_per_chunk if 0 < clients_per_chunk < cohort else cohort
  if cohort % chunk:
    raise ValueError(f'clients_per_chunk={chunk} must divide the cohort of {cohort} clients')
  split = lambda a: a.reshape((cohort // chunk, chunk) + a.shape[1:])
  weights = example_weights(num_examples)
  private = dp_clip > 0  # a Python guard: the default round traces none of DP-FedAvg's ops
  robust = aggregation != 'mean'  # likewise: the cohort's models are kept side by side

  def train_chunk(totals, xs):
    d, cid, w = xs
    p, loss, gsq = vmap_clients(client, chunk)(d, cid)
    if byzantine:  # the attackers among this chunk send θ_t + f (θ_k − θ_t)
      f = jnp.where(jnp.isin(cid, jnp.asarray(byzantine, cid.dtype)), byzantine_factor, 1.0)
      p = jax.tree.map(lambda q, g: g + f.reshape((-1,) + (1,) * g.ndim).astype(q.dtype)
                       * (q - g), p, global_params)
    add = lambda t, q: t + jnp.tensordot(w, q, axes=1)
    if robust:  # the models themselves leave the scan; the total stays zeros
      return (totals[0], jax.tree.map(add, totals[1], gsq)), (loss, p)
    if private:  # the sum of the clipped updates Δ_k (uniform, not example-weighted)
      deltas = jax.vmap(lambda q: clip_update(
          jax.tree.map(jnp.subtract, q, global_params), dp_clip))(p)
      total = jax.tree.map(lambda t, q: t + jnp.sum(q, axis=0), totals[0], deltas)
    else:
      total = jax.tree.map(add, totals[0], p)
    return (total, jax.tree.map(add, totals[1], gsq)), (loss, ())

  zeros = jax.tree.map(jnp.zeros_like, global_params)
  (avg, grad_sq), (client_loss, models) = jax.lax.scan(
      train_chunk, (zeros, zeros if track_grad_sq else ()),
      (jax.tree.map(split, data), split(client_ids), split(weights)))
  client_loss = client_loss.reshape(cohort)
  if robust:
    models = jax.tree.map(lambda a: a.reshape((cohort,) + a.shape[2:]), models)
    bucket_key = jax.random.fold_in(jax.random.fold_in(rng, BUCKET_STREAM), state.round)
    avg = robust_average(models, num_examples, aggregation, trim, bucket, bucket_key)
  if private:
    if dp_noise > 0:
      key = jax.random.fold_in(jax.random.fold_in(rng, DP_NOISE_STREAM), state.round)
      avg = jax.tree.map(jnp.add, avg, dp_noise_tree(avg, mask, key, dp_noise * dp_clip))
    avg = jax.tree.map(lambda g, s: g + s / cohort, global_params, avg)
  params = _finish(avg, num_examples, mask, global_params)
  params, server_opt = server.step(server_tx, global_params, params, state.server_opt, mask,
                                   jnp.sum(num_examples) > 0)
  n = num_examples.astype(jnp.float32)
  train_loss = jnp.sum(client_loss * n) / jnp.maximum(jnp.sum(n), 1.0)
  metrics = RoundMetrics(train_loss, client_loss, jnp.sum(num_examples), grad_sq)
  return ServerState(params, mask, state.round + 1, server_opt), metrics


def make_round_fn(apply_fn, *, optimizer: str, local_epochs: int, mask_fn: Callable | None = None,
                  clients_per_chunk: int = 0, track_grad_sq: bool = False,
                  server_tx=None, wrap: Callable | None = None, dp_clip: float = 0.0,
                  dp_noise: float = 0.0, max_steps: int = 0, aggregation: str = 'mean',
                  trim: float = 0.0, byzantine: tuple[int, ...] = (),
                  byzantine_factor: float = -10.0, bucket: int = 1):
  """Returns the jitted round `(state, data, num_examples, client_ids, rng, lr, aux)`.

  `wrap` decorates the Python body before jit (tests pass `chex.assert_max_traces(n=1)`). The
  state's buffers are donated: the round replaces them.
  """
  def body(state, data, num_examples, client_ids, rng, learning_rate, aux):
    return round_body(state, data, num_examples, client_ids, rng, learning_rate, aux,
                      apply_fn=apply_fn, optimizer=optimizer, local_epochs=local_epochs,
                      mask_fn=mask_fn, clients_per_chunk=clients_per_chunk,
                      track_grad_sq=track_grad_sq, server_tx=server_tx, dp_clip=dp_clip,
                      dp_noise=dp_noise, max_steps=max_steps, aggregation=aggregation,
                      trim=trim, byzantine=byzantine, byzantine_factor=byzantine_factor,
                      bucket=bucket)
  if wrap is not None:
    body = wrap(body)
  return layout.jit(body, donate_argnums=(0,))


def make_variant_round_fn(apply_fn, *, num_variants: int, optimizer: str, local_epochs: int,
                          mask_fn: Callable | None = None, clients_per_chunk: int = 0,
                          track_grad_sq: bool = False, per_variant_data: bool = False,
                          variants_per_chunk: int = 0, server_tx=None,
                          wrap: Callable | None = None, dp_clip: float = 0.0,
                          dp_noise: float = 0.0, shrink_plan: shrink.Plan | None = None,
                          params_like: PyTree = None, max_steps: int = 0,
                          aggregation: str = 'mean', trim: float = 0.0,
                          byzantine: tuple[int, ...] = (), byzantine_factor: float = -10.0,
                          bucket: int = 1):
  """The jitted round of `num_variants` runs side by side (thresholds, seeds): ONE program.

  Called as `(state, data, num_examples, client_ids, rng, learning_rate, aux)` where `state`,
  `rng` ([variants] keys) and `aux` have a leading variant axis, and the cohort's `data`,
  `num_examples` and `client_ids` either have one too (`per_variant_data`: each seed samples its
  own cohort) or are shared by every variant (a Tp sweep of one seed). The metrics come back
  with the variant axis. Variants are `vmap`ped (`variants_per_chunk=0`, the layout for GPUs and
  TPUs) or run one after another inside the program (1, faster on a CPU where the clients are
  too; `federated.chunked_map`). One variant is `round_body` itself with the axis added back,
  so a plain run is exactly the round it always was. The state's buffers are donated.

  Shrunk rounds (`shrink_plan`, a `shrink.Plan` of the mask every variant keeps inside; needs
  `params_like`, the full params' shapes): the program slices the state (params, mask, the
  server optimizer's moments) to the kept units, trains and averages the physically smaller
  model `shrink_plan.model`, and puts the result back in zeros shaped like the full state. Equal
  to the masked full-model round up to float rounding whenever the mask is fixed for the round
  (no `mask_fn`), nothing reads the pruned coordinates' gradients (no `track_grad_sq`) and the
  DP noise is off (its draws depend on the shapes); the runner checks (`train.py`).
  """
  if shrink_plan is not None:
    if mask_fn is not None or track_grad_sq or dp_noise > 0:
      raise ValueError('a shrunk round needs a fixed mask, no squared gradients and no DP noise')
    model = shrink_plan.model
    apply_fn = lambda p, x: model.apply({'params': p}, x)
  body = functools.partial(round_body, apply_fn=apply_fn, optimizer=optimizer,
                           local_epochs=local_epochs, mask_fn=mask_fn,
                           clients_per_chunk=clients_per_chunk, track_grad_sq=track_grad_sq,
                           server_tx=server_tx, dp_clip=dp_clip, dp_noise=dp_noise,
                           max_steps=max_steps, aggregation=aggregation, trim=trim,
                           byzantine=tuple(byzantine), byzantine_factor=byzantine_factor,
                           bucket=bucket)

  def variant_round(state, data, num_examples, client_ids, rng, learning_rate, aux):
    cohort = (data, num_examples, client_ids)
    if num_variants == 1:
      first = lambda t: jax.tree.map(lambda a: a[0], t)
      cohort = first(cohort) if per_variant_data else cohort
      out = body(first(state), *cohort, rng[0], learning_rate, first(aux))
      return jax.tree.map(lambda a: a[None], out)
    if per_variant_data:
      one = lambda st, c, key, ax: body(st, *c, key, learning_rate, ax)
      return chunked_map(one, (state, cohort, rng, aux), variants_per_chunk)
    one = lambda st, key, ax: body(st, *cohort, key, learning_rate, ax)
    return chunked_map(one, (state, rng, aux), variants_per_chunk)

  if shrink_plan is not None:
    full_round = variant_round

    def variant_round(state, *args):
      small = shrink.take(state, shrink_plan, params_like, lead=1)
      small, metrics = full_round(small, *args)
      return shrink.put(small, state, shrink_plan, params_like, lead=1), metrics

  if wrap is not None:
    variant_round = wrap(variant_round)
  return layout.jit(variant_round, donate_argnums=(0,))


def stack(trees) -> PyTree:
  """Stacks same-shaped pytrees on a new leading (variant) axis, in one compiled program."""
  return _stack(*trees)


@jax.jit
def _stack(*trees: PyTree) -> PyTree:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree, index: int) -> PyTree:
  """Element `index` of the leading axis of every leaf (one program for every index)."""
  return _take(tree, jnp.int32(index))


@jax.jit
def _take(tree: PyTree, index: jax.Array) -> PyTree:
  return jax.tree.map(lambda a: a[index], tree)
