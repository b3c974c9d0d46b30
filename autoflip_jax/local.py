"""Local training of one client: the pure function that exploration and every round vmap.

A client's data arrives padded as `[steps, batch, ...]` with a validity mask. Each epoch the
client's valid examples are shuffled on the device (`epoch_order`) and laid out valid-first, so the
client takes exactly `ceil(n_k / batch)` optimizer steps per epoch, the last one partial, like a
PyTorch `DataLoader(shuffle=True)`. Steps with no valid example leave the params and the optimizer
state untouched, so padding never changes a result.

Masked training (AUTOFLIP.md §3): gradients are masked before the optimizer (so Adam's moments of
pruned weights stay zero) and the params are masked again after every step, so pruned weights stay
exactly zero whatever the optimizer does.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from autoflip_jax.masks import apply_mask

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]


class ClientData(NamedTuple):
  """One client's padded data (or many, with a leading client axis under `vmap`)."""
  x: jax.Array      # [steps, batch, ...]
  y: jax.Array      # [steps, batch] int32
  valid: jax.Array  # [steps, batch] bool


class TrainOutput(NamedTuple):
  params: PyTree
  loss: jax.Array         # example-weighted mean training loss over all epochs run
  last_loss: jax.Array    # mean training loss of the last epoch run
  epochs_run: jax.Array   # int32; < epochs when early stopping fired
  deviation: PyTree       # sum over epochs of (params_e - params_0)^2 if tracked, else ()
  grad_sq: PyTree = ()    # sum over steps of the squared (unmasked) gradients if tracked, else ()


OPTIMIZERS = ('adam', 'sgd')  # the clients' (and explorers') optimizers


def make_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
  """The client optimizer. `learning_rate` may be a traced scalar (per-round decay, no retrace)."""
  if name == 'adam':
    return optax.adam(learning_rate)
  if name == 'sgd':
    return optax.sgd(learning_rate)
  raise ValueError(f'config.optimizer={name!r} is not one of {OPTIMIZERS}')


def cross_entropy(apply_fn: ApplyFn, params: PyTree, x, y, valid) -> tuple[jax.Array, jax.Array]:
  """Sum of softmax cross-entropy over valid examples, and their count."""
  logits = apply_fn(params, x)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  # `where`, not a product: a NaN in a padded slot must not reach the sum (NaN * 0 = NaN).
  return jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(valid.astype(losses.dtype))


def epoch_order(key: jax.Array, valid_flat: jax.Array) -> jax.Array:
  """A random permutation of the slots with all valid examples first.

  Slot i's random draw depends on `key` and i alone, not on the number of slots, so a client's
  examples come in the same order however far its data is padded: a cohort packed to its own
  largest client (`config.pad_steps='cohort'`) trains exactly as when packed to the largest
  client of the dataset.
  """
  slots = jnp.arange(valid_flat.shape[0], dtype=jnp.uint32)
  u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(slots)
  return jnp.argsort(jnp.where(valid_flat, u, 2.0))


def train(params: PyTree, mask: PyTree, data: ClientData, key: jax.Array, *,
          apply_fn: ApplyFn, optimizer: str, learning_rate, epochs: int, patience: int = 0,
          track_deviation: bool = False, track_grad_sq: bool = False,
          max_steps: int = 0) -> TrainOutput:
  """Trains one client for up to `epochs` epochs from `params` under `mask`.

  `patience > 0` stops early once the epoch's mean training loss has not improved for `patience`
  epochs (the reference exploration's rule); params are then those of the last epoch run. With
  `track_deviation`, also returns the squared deviation from the start accumulated at the end of
  every epoch (the exploration's trajectory option). `max_steps > 0` caps the steps of an epoch
  (`config.max_local_steps`): each epoch trains on the first `max_steps` batches of a fresh random
  order of the client's examples, i.e. that many batches sampled from all its data.
  """
  tx = make_optimizer(optimizer, learning_rate)
  steps, batch = data.y.shape
  run_steps = min(steps, max_steps) if max_steps > 0 else steps
  y_flat, valid_flat = data.y.reshape(-1), data.valid.reshape(-1)
  x_flat = data.x.reshape((steps * batch,) + data.x.shape[2:])
  # Zero the padding so that whatever it held cannot reach a gradient through the forward pass.
  x_flat = jnp.where(valid_flat.reshape((-1,) + (1,) * (x_flat.ndim - 1)), x_flat, 0)
  params = apply_mask(params, mask)
  params0 = params

  def loss_fn(p, x, y, v):
    total, n = cross_entropy(apply_fn, p, x, y, v)
    return total / jnp.maximum(n, 1.0), (total, n)

  def train_step(carry, batch_data):
    p, opt_state, gsq = carry
    x, y, v = batch_data
    (_, (total, n)), dense_grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y, v)
    grads = apply_mask(dense_grads, mask)
    updates, opt_state = tx.update(grads, opt_state, p)
    p = apply_mask(optax.apply_updates(p, updates), mask)
    if track_grad_sq:  # dense: a pruned weight's gradient says what regrowing it would buy
      gsq = jax.tree.map(lambda a, g: a + jnp.square(g), gsq, dense_grads)
    return (p, opt_state, gsq), (total, n)

  def step(carry, batch_data):
    # A step of padding alone (past a small client's data) leaves everything as it was. As a
    # `cond` it costs nothing where a client trains on its own (one at a time on a CPU: a skewed
    # cohort then costs its clients' real steps, not the largest one's for each); under `vmap`
    # it becomes a select of the two branches, the cost of the step.
    zero = jnp.zeros((), jnp.float32)
    return jax.lax.cond(jnp.any(batch_data[2]), train_step,
                        lambda c, _: (c, (zero, zero)), carry, batch_data)

  def run_epoch(state):
    epoch, p, opt_state, best, bad, loss_sum, n_sum, _, dev, gsq = state
    order = epoch_order(jax.random.fold_in(key, epoch), valid_flat)[:run_steps * batch]
    shaped = lambda a: a[order].reshape((run_steps, batch) + a.shape[1:])
    (p, opt_state, gsq), (totals, ns) = jax.lax.scan(
        step, (p, opt_state, gsq), (shaped(x_flat), shaped(y_flat), shaped(valid_flat)))
    epoch_loss = jnp.sum(totals) / jnp.maximum(jnp.sum(ns), 1.0)
    improved = epoch_loss < best
    best = jnp.where(improved, epoch_loss, best)
    bad = jnp.where(improved, 0, bad + 1)
    if track_deviation:
      dev = jax.tree.map(lambda d, a, b: d + jnp.square(a - b), dev, p, params0)
    return (epoch + 1, p, opt_state, best, bad, loss_sum + jnp.sum(totals),
            n_sum + jnp.sum(ns), epoch_loss, dev, gsq)

  def not_done(state):
    epoch, bad = state[0], state[4]
    go = epoch < epochs
    if patience > 0:
      go = go & (bad < patience)
    return go

  dev0 = jax.tree.map(jnp.zeros_like, params) if track_deviation else ()
  gsq0 = jax.tree.map(jnp.zeros_like, params) if track_grad_sq else ()
  zero = jnp.zeros((), jnp.float32)
  init = (jnp.zeros((), jnp.int32), params, tx.init(params), jnp.array(jnp.inf, jnp.float32),
          jnp.zeros((), jnp.int32), zero, zero, zero, dev0, gsq0)
  epoch, params, _, _, _, loss_sum, n_sum, last_loss, dev, gsq = jax.lax.while_loop(
      not_done, run_epoch, init)
  return TrainOutput(params, loss_sum / jnp.maximum(n_sum, 1.0), last_loss, epoch, dev, gsq)
