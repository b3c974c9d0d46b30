"""Federated loss exploration and the server's guidance matrix (AutoFLIP Sec. 3.1; AUTOFLIP.md §1).

Before federated training, each explorer client k trains a copy of the initial global model θ0 on
its own data for up to `e_exp` epochs (early stopping with `patience` on its training loss) and
reports the per-parameter squared deviation (θk − θ0)². All explorers run in ONE compiled program:
`local.train` `vmap`ped over the explorer axis inside one `jax.jit`.

The server's guidance for every parameter tensor W is

    G_W = normalise( mean_k (θk_W − θ0_W)² ),

a plain mean as in the reference code, or the example-weighted mean (`weighted=True`), normalised
per tensor (min-max by default, see `masks.normalize`).

Trustworthy exploration (docs/robustness.md), all pure transforms of the stacked reports
`[explorers, ...]`, applied by the server in this order (`algorithms/autoflip.py`):

1. `attack`: the threat simulation. The attacking explorers' reports are replaced, per tensor:
   `invert` reverses the ranking (the value of rank i goes to the coordinate of rank n−1−i: the
   largest deviations where the weights moved least, steering pruning onto important weights,
   with the report's values and norm unchanged), `scale` multiplies by 100, `random` puts the
   report's own values at random places (same values and norm, no information).
2. `clip_each`: every report scaled to L2 norm at most C (over all its tensors together):
   r_k ← r_k · min(1, C / ‖r_k‖).
3. Aggregation over the explorer axis, coordinate-wise (`aggregate`): `mean` (the reference),
   `median`, or `trimmed_mean` (the ⌊trim·K⌋ largest and smallest values of each coordinate
   dropped, the rest averaged), or `filtered_mean` (whole explorers whose report disagrees with
   the others are dropped, `explorer_outliers`, and the rest averaged). The median and trimmed
   mean can first average random buckets of `bucket` explorers (`federated.bucket_means`,
   Karimireddy et al. 2022) and take the order statistic over the bucket means. Or, for private
   exploration, `noisy_mean`:
   (Σ_k r_k + N(0, (z C)² I)) / K, the Gaussian mechanism on the clipped sum.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from autoflip_jax import federated, layout, local
from autoflip_jax.masks import is_prunable, normalize, ones_mask

PyTree = Any


class Exploration(NamedTuple):
  sqdev: PyTree          # leading axis [explorers]: (θk − θ0)², or the trajectory sum
  final_loss: jax.Array  # [explorers] mean training loss of each explorer's last epoch
  epochs_run: jax.Array  # [explorers] epochs before early stopping


def deviation(params: PyTree, params0: PyTree) -> PyTree:
  """Squared per-parameter deviation (θk − θ0)²."""
  return jax.tree.map(lambda a, b: jnp.square(a - b), params, params0)


def explore_client(params0: PyTree, data: local.ClientData, key: jax.Array, *, apply_fn,
                   optimizer: str, learning_rate: float, epochs: int, patience: int,
                   trajectory: bool = False,
                   max_steps: int = 0) -> tuple[PyTree, jax.Array, jax.Array]:
  """One explorer: local training from θ0, returning its squared deviation, last loss, epochs."""
  out = local.train(params0, ones_mask(params0), data, key, apply_fn=apply_fn, optimizer=optimizer,
                    learning_rate=learning_rate, epochs=epochs, patience=patience,
                    track_deviation=trajectory, max_steps=max_steps)
  sqdev = out.deviation if trajectory else deviation(out.params, params0)
  return sqdev, out.last_loss, out.epochs_run


def make_explore_fn(apply_fn, *, optimizer: str, learning_rate: float, epochs: int,
                    patience: int, trajectory: bool = False, clients_per_chunk: int = 0,
                    max_steps: int = 0):
  """Returns jitted `explore(params0, data [K, steps, batch, ...], client_ids [K], rng)`.

  All explorers in one program, `clients_per_chunk` at a time (`federated.chunked_map`: 0 one
  vmap, 1 one explorer after another, which also lets each stop early on its own). `max_steps`:
  `config.max_local_steps` (`local.train`).
  """
  def explore(params0, data: local.ClientData, client_ids, rng) -> Exploration:
    keys = jax.vmap(lambda c: jax.random.fold_in(rng, c))(client_ids)
    one = lambda d, k: explore_client(params0, d, k, apply_fn=apply_fn, optimizer=optimizer,
                                      learning_rate=learning_rate, epochs=epochs,
                                      patience=patience, trajectory=trajectory,
                                      max_steps=max_steps)
    sqdev, loss, epochs_run = federated.chunked_map(one, (data, keys), clients_per_chunk)
    return Exploration(sqdev, loss, epochs_run)
  return layout.jit(explore)


class Chain(NamedTuple):
  params: PyTree         # the model after the last explorer
  final_loss: jax.Array  # [explorers] mean training loss of each explorer's last epoch
  epochs_run: jax.Array  # [explorers] epochs before early stopping


def make_chain_fn(apply_fn, *, optimizer: str, learning_rate: float, epochs: int,
                  patience: int, max_steps: int = 0):
  """Returns jitted `chain(params0, data [K, steps, batch, ...], client_ids [K], rng) -> Chain`.

  The reference code's exploration as it really runs (AUTOFLIP.md §7; docs/reference_protocol.md):
  its explorers train the server's one model object in place (`create_scout` trains
  `model.train()`, which is the model itself, with no copy), so explorer k starts where explorer
  k − 1 stopped, in client-id order, each for up to `epochs` epochs with a fresh optimizer. One
  `lax.scan` over the explorers; explorer k's key is `fold_in(rng, client_id)` as in `explore`.
  """
  def chain(params0, data: local.ClientData, client_ids, rng) -> Chain:
    def one(params, inputs):
      d, c = inputs
      out = local.train(params, ones_mask(params), d, jax.random.fold_in(rng, c),
                        apply_fn=apply_fn, optimizer=optimizer, learning_rate=learning_rate,
                        epochs=epochs, patience=patience, max_steps=max_steps)
      return out.params, (out.last_loss, out.epochs_run)
    params, (loss, epochs_run) = jax.lax.scan(one, params0, (data, client_ids))
    return Chain(params, loss, epochs_run)
  return layout.jit(chain)


AGGREGATIONS = ('mean', 'median', 'trimmed_mean', 'filtered_mean')
ATTACKS = ('invert', 'scale', 'random')
SCALE_ATTACK = 100.0  # the `scale` attack's factor


def _robust_z(x: jax.Array) -> jax.Array:
  """(x − median) / (1.4826 · MAD): a z-score that a minority of outliers cannot drag."""
  med = jnp.median(x)
  mad = 1.4826 * jnp.median(jnp.abs(x - med))
  return (x - med) / jnp.maximum(mad, 1e-6 * jnp.maximum(jnp.abs(med), 1e-12))


def explorer_outliers(sqdev: PyTree, z: float = 3.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """bool `[explorers]`: the reports that disagree with the rest, and the two scores used.

  Agreement: the correlation of an explorer's log deviations, log(r + ε_t) over every kernel
  tensor t as one vector, with those of the coordinate-wise median report (ε_t = 1e-3 times the
  tensor's mean report: the log tames the heavy tail, the ε the exact zeros, and no sort is
  needed; XLA:CPU sorts 1.66M-long rows slowly). Honest explorers of non-IID clients differ,
  but they move the same weights more than others; an `invert`ed report correlates negatively,
  a `random` one not at all. Size: the log of the report's L2 norm (a
  `scale`d report keeps its ranking but is far louder). An explorer is an outlier when its
  agreement is more than `z` robust standard deviations (`_robust_z`: median and MAD over the
  explorers) below the median agreement, or its log norm more than `z` away from the median.
  Both scores are robust to fewer than half of the explorers attacking.
  """
  kernels = [d.reshape(d.shape[0], -1) for d in jax.tree.leaves(sqdev) if is_prunable(d[0])]
  eps = [1e-3 * jnp.maximum(jnp.mean(d), 1e-30) for d in kernels]
  logs = jnp.concatenate([jnp.log(d + e) for d, e in zip(kernels, eps)], axis=1)  # [K, P]
  ref = jnp.concatenate([jnp.log(jnp.median(d, axis=0) + e) for d, e in zip(kernels, eps)])
  center = lambda x: x - jnp.mean(x, axis=-1, keepdims=True)
  logs, ref = center(logs), center(ref)
  agreement = logs @ ref / jnp.maximum(jnp.linalg.norm(logs, axis=1) * jnp.linalg.norm(ref),
                                       1e-30)
  log_norm = jnp.log(jnp.maximum(jax.vmap(tree_norm)(sqdev), 1e-30))
  outlier = (_robust_z(agreement) < -z) | (jnp.abs(_robust_z(log_norm)) > z)
  return outlier, agreement, log_norm


def aggregate(sqdev: PyTree, weights: jax.Array | None = None, aggregation: str = 'mean',
              trim: float = 0.1, filter_z: float = 3.0,
              outlier: jax.Array | None = None, bucket: int = 1,
              key: jax.Array | None = None) -> PyTree:
  """Coordinate-wise aggregate over the explorer axis (axis 0) of the reports.

  `mean`: the plain mean, or with `weights` ([explorers], e.g. example counts) the weighted mean
  (explorers of weight 0 are ignored). `median`: the coordinate-wise median (the mean of the two
  middle values for an even count). `trimmed_mean`: with k = ⌊trim·K⌋, each coordinate's k
  largest and k smallest values dropped and the K − 2k others averaged (trim < 0.5 keeps at
  least one). `filtered_mean`: the plain mean over the explorers that `explorer_outliers`
  (threshold `filter_z`) does not flag: the mean itself when none is, and of the honest ones
  when the attackers are told apart (`outlier`: its flags when already computed). The robust
  ones take no weights (`check_config` refuses the combination). `bucket` > 1 (median and
  trimmed mean only): the explorers in a random order (`key`) averaged `bucket` at a time
  (`federated.bucket_means`), the order statistic taken over those means (⌊trim · buckets⌋
  cut at each end).
  """
  if bucket > 1:
    if aggregation not in ('median', 'trimmed_mean') or key is None:
      raise ValueError(f'bucket={bucket} needs aggregation median or trimmed_mean and a key '
                       f'(got {aggregation!r}, key {key!r})')
    count = jax.tree.leaves(sqdev)[0].shape[0]
    sqdev, _ = federated.bucket_means(sqdev, jnp.ones((count,), bool), bucket, key)
  if aggregation == 'filtered_mean':
    if outlier is None:
      outlier, _, _ = explorer_outliers(sqdev, filter_z)
    keep = (~outlier).astype(jnp.float32)
    keep = keep / jnp.maximum(jnp.sum(keep), 1.0)
    return jax.tree.map(lambda d: jnp.tensordot(keep, d, axes=1), sqdev)
  if aggregation == 'median':
    return jax.tree.map(lambda d: jnp.median(d, axis=0), sqdev)
  if aggregation == 'trimmed_mean':
    def trimmed(d):
      k = int(trim * d.shape[0])
      return jnp.mean(jnp.sort(d, axis=0)[k:d.shape[0] - k], axis=0)
    return jax.tree.map(trimmed, sqdev)
  if aggregation != 'mean':
    raise ValueError(f'aggregation={aggregation!r} is not one of {AGGREGATIONS}')
  if weights is None:
    return jax.tree.map(lambda d: jnp.mean(d, axis=0), sqdev)
  w = weights.astype(jnp.float32)
  w = w / jnp.maximum(jnp.sum(w), 1e-12)
  return jax.tree.map(lambda d: jnp.tensordot(w, d, axes=1), sqdev)


def guidance(sqdev: PyTree, weights: jax.Array | None = None,
             normalization: str = 'minmax', aggregation: str = 'mean',
             trim: float = 0.1, filter_z: float = 3.0,
             outlier: jax.Array | None = None, bucket: int = 1,
             key: jax.Array | None = None) -> PyTree:
  """Server aggregation over explorers (axis 0) of the squared deviations, normalised.

  `aggregate` (the mean by default: with `weights=None` every explorer counts equally, the
  reference code), then per-tensor normalisation.
  """
  return normalize(aggregate(sqdev, weights, aggregation, trim, filter_z, outlier, bucket, key),
                   normalization)


def tree_norm(tree: PyTree) -> jax.Array:
  """The L2 norm of a whole pytree (all its leaves as one vector)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def clip_tree(tree: PyTree, clip: float) -> PyTree:
  """`tree · min(1, clip / ‖tree‖)`: scaled onto the L2 ball of radius `clip` when outside it."""
  scale = jnp.minimum(1.0, clip / jnp.maximum(tree_norm(tree), 1e-30))
  return jax.tree.map(lambda x: (x * scale).astype(x.dtype), tree)


def clip_each(sqdev: PyTree, clip: float) -> PyTree:
  """Every explorer's report (leading axis) clipped to L2 norm `clip` (`clip_tree`)."""
  return jax.vmap(lambda t: clip_tree(t, clip))(sqdev)


def gaussian_like(tree: PyTree, key: jax.Array, std: float) -> PyTree:
  """Independent N(0, std²) noise of the tree's shapes, one key per leaf."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [std * jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


def noisy_mean(sqdev: PyTree, std: float, key: jax.Array) -> PyTree:
  """(Σ_k r_k + N(0, std² I)) / K over the explorer axis: the Gaussian mechanism on the sum
  (std = z·C for reports clipped to C), divided by the public explorer count."""
  total = jax.tree.map(lambda d: jnp.sum(d, axis=0), sqdev)
  count = jax.tree.leaves(sqdev)[0].shape[0]
  return jax.tree.map(lambda s, n: (s + n) / count, total, gaussian_like(total, key, std))


def invert_ranking(x: jax.Array) -> jax.Array:
  """The values of `x` with their ranking reversed: the largest where the smallest was, etc."""
  flat = x.reshape(-1)
  order = jnp.argsort(flat)
  return jnp.zeros_like(flat).at[order].set(flat[order[::-1]]).reshape(x.shape)


def attack(sqdev: PyTree, attackers, kind: str, key: jax.Array) -> PyTree:
  """The reports with those of the `attackers` (explorer positions, numpy ints) crafted by
  `kind` (see the module docstring), tensor by tensor; the others untouched."""
  idx = jnp.asarray(attackers, jnp.int32)
  if idx.size == 0:
    return sqdev
  leaves, treedef = jax.tree.flatten(sqdev)
  keys = jax.random.split(key, len(leaves))

  def craft(d, k):
    rows = d[idx]
    if kind == 'invert':
      bad = jax.vmap(invert_ranking)(rows)
    elif kind == 'scale':
      bad = rows * SCALE_ATTACK
    elif kind == 'random':
      flat = rows.reshape(rows.shape[0], -1)
      bad = jax.random.permutation(k, flat, axis=1, independent=True).reshape(rows.shape)
    else:
      raise ValueError(f'attack kind={kind!r} is not one of {ATTACKS}')
    return d.at[idx].set(bad)
  return jax.tree.unflatten(treedef, [craft(d, k) for d, k in zip(leaves, keys)])
