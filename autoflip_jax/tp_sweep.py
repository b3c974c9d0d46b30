"""A Tp sweep in one program: AutoFLIP at several thresholds, trained side by side.

With `config.tp_sweep='0.1,0.2,0.3'`, `train_and_evaluate` replaces `autoflip` in the algorithm
list by one run of every threshold:

* one exploration and guidance matrix (they do not depend on Tp), then one hybrid mask per
  threshold (`algorithms.init_autoflip_sweep`);
* the K server states (params, mask, round) stacked on a leading threshold axis, and ONE jitted
  program per round for all of them: `federated.round_body` over that axis, `vmap`ped on GPUs and
  TPUs, one threshold after another on a CPU, the cohort's data shared (`make_sweep_round_fn`;
  it compiles once);
* per threshold, the evaluation, the metrics rows and the summary row of an ordinary run, named
  `autoflip_tp<Tp>` (`sweep_name`), so the table and the plots show each threshold as its own
  algorithm. One `Checkpointer` (`checkpoints/autoflip_sweep`) holds the stacked state and every
  threshold's running totals; a rerun resumes from it like `train.run_algorithm`.

Every threshold gets what a run with `config.tp` set to it gets: the same explorers, exploration
key, cohorts, learning rates and round keys. So its metrics and params equal that run's (up to
float rounding of the batched program; tests/test_tp_sweep.py). Each threshold's round-0 row and
summary report the whole exploration's bytes and seconds, as its own run would; the sweep itself
explored once. A row's `round_seconds` is the shared round (all thresholds) plus this threshold's
evaluation.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, algorithms, checkpoint, federated, masks, train
from autoflip_jax.masks import apply_mask

PyTree = Any
CHECKPOINT_NAME = 'autoflip_sweep'  # checkpoints/<this>: the stacked state of every threshold


def sweep_name(tp: float) -> str:
  """The algorithm name of one threshold's rows: `autoflip_tp0.1`."""
  return f'autoflip_tp{tp:g}'


def stack(trees: Sequence[PyTree]) -> PyTree:
  """Stacks same-shaped pytrees on a new leading axis (one compiled program, not one a leaf)."""
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


def make_sweep_round_fn(apply_fn, *, optimizer: str, local_epochs: int,
                        clients_per_chunk: int = 0, thresholds_per_chunk: int = 0):
  """Returns the jitted sweep round `(stacked state, data, num_examples, ids, rng, lr, aux)`.

  `federated.round_body` over the leading axis of the state (params, mask and round of each
  threshold), `thresholds_per_chunk` thresholds at a time (`federated.chunked_map`: 0 `vmap`s
  all of them, the layout for GPUs and TPUs; 1 trains one after another, faster on a CPU, see
  `resolve_threshold_chunk`); the cohort's data, ids, key, learning rate and aux are shared.
  Either way it is one program. The metrics come back with the same leading axis. The state's
  buffers are donated, as in `federated.make_round_fn`.
  """
  body = functools.partial(federated.round_body, apply_fn=apply_fn, optimizer=optimizer,
                           local_epochs=local_epochs, clients_per_chunk=clients_per_chunk)

  def sweep_round(state, data, num_examples, client_ids, rng, learning_rate, aux):
    one = lambda st: body(st, data, num_examples, client_ids, rng, learning_rate, aux)
    return federated.chunked_map(one, (state,), thresholds_per_chunk)
  return jax.jit(sweep_round, donate_argnums=(0,))


def resolve_threshold_chunk(clients_per_chunk: int) -> int:
  """Thresholds side by side (0, `vmap`) or one after another (1), as the clients are.

  Where the clients are trained one at a time (auto on a CPU, `federated.resolve_chunk`), a
  vmap over thresholds would bring back the batched program that is slower there.
  """
  return 1 if clients_per_chunk == 1 else 0


def run_sweep(config, tps: Sequence[float], *, model, params0: PyTree, pack, dataset, positions,
              rng: jax.Array, writer: train.MetricsWriter, ckpt: checkpoint.Checkpointer,
              mesh=None) -> list[dict]:
  """Runs (or resumes) AutoFLIP at every threshold of `tps`; returns one summary row each.

  The arguments are those of `train.run_algorithm`; see the module docstring.
  """
  names = [sweep_name(tp) for tp in tps]
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  units = model.units()
  evaluate = train.make_eval_fn(apply_fn, config.eval_batch_size)
  total = accounting.total_params(params0)
  k = len(tps)
  start_round = ckpt.latest_round()
  if start_round is None:
    # The key run_algorithm gives algorithms.init: the same explorers' shuffles.
    inits = algorithms.init_autoflip_sweep(
        params0, tps, config=config, apply_fn=apply_fn, units=units, pack=pack,
        rng=jax.random.fold_in(rng, 2))
    totals = []
    for name, init in zip(names, inits):
      logging.info('[%s] before round 1: %s in %.1f s', name, init.info, init.seconds)
      acc, loss = evaluate(apply_mask(params0, init.mask), dataset.test_x, dataset.test_y)
      totals.append(train.start_totals(init, acc, loss))
      writer.reset(name, -1)
      writer.write(train.initial_row(name, init, acc, loss,
                                     train.cost_fields(params0, init.mask, positions)))
    state = federated.ServerState(stack([params0] * k), stack([i.mask for i in inits]),
                                  jnp.zeros((k,), jnp.int32))
    start_round = 0
    ckpt.maybe_save(0, train.ckpt_tree(state, None, None), _meta(names, totals), force=True)
  else:
    ones = masks.ones_mask(params0)
    like = train.ckpt_tree(federated.ServerState(stack([params0] * k), stack([ones] * k),
                                                  jnp.zeros((k,), jnp.int32)), None, None)
    tree, meta = ckpt.restore(start_round, like)
    state = federated.ServerState(tree['params'], tree['mask'], tree['round'])
    totals = [meta['algorithms'][name] for name in names]
    for name in names:
      writer.reset(name, start_round)
    logging.info('[%s] resumed from the checkpoint of round %d', CHECKPOINT_NAME, start_round)

  state = federated.replicate(state, mesh)
  chunk = federated.chunk_for(config)
  round_fn = make_sweep_round_fn(
      apply_fn, optimizer=config.optimizer, local_epochs=config.local_epochs,
      clients_per_chunk=chunk, thresholds_per_chunk=resolve_threshold_chunk(chunk))
  threshold_masks = [unstack(state.mask, i) for i in range(k)]
  costs = [train.cost_fields(params0, m, positions) for m in threshold_masks]
  train_rng = jax.random.fold_in(rng, 1)
  start = time.time()
  for r in range(start_round + 1, config.num_rounds + 1):
    t0 = time.time()
    ids = train.sample_clients(config.seed, r, config.num_clients, config.clients_per_round)
    batch, num_examples = pack(ids)
    lr = train.round_learning_rate(config, r)
    state, met = round_fn(state, batch, num_examples, federated.shard_clients(ids, mesh),
                          train_rng, jnp.float32(lr), None)
    train_losses = np.asarray(train.host_value(met.train_loss))
    round_seconds = time.time() - t0
    if not np.all(np.isfinite(train_losses)):  # the clients' losses only to name the culprits
      client_losses = train.host_value(met.client_loss)
      for i, name in enumerate(names):
        train.check_finite(name, r, float(train_losses[i]), client_losses[i], ids,
                           ckpt.latest_round())
    for i, name in enumerate(names):
      t1 = time.time()
      up, down = train.round_traffic(costs[i], total, len(ids), totals[i]['mask_is_new'])
      totals[i]['mask_is_new'] = False  # the mask is fixed: sent once, in round 1
      totals[i]['cum_up'] += up
      totals[i]['cum_down'] += down
      if train.eval_due(config, r):
        totals[i]['acc'], totals[i]['loss'] = evaluate(unstack(state.params, i), dataset.test_x,
                                                       dataset.test_y)
      writer.write(train.round_row(name, r, totals[i], float(train_losses[i]), costs[i], up,
                                   down, lr, round_seconds + time.time() - t1))
      done = r - start_round
      eta = (time.time() - start) / done * (config.num_rounds - r)
      train.log_round(name, r, config.num_rounds, totals[i], float(train_losses[i]), costs[i],
                      up, down, done / (time.time() - start), eta)
    ckpt.maybe_save(r, train.ckpt_tree(state, None, None), _meta(names, totals),
                    force=r == config.num_rounds)
    if r % config.checkpoint_every == 0:  # plots a person can watch while the run goes on
      writer.plot()
  return [dict(train.summary_row(name, totals[i], params0, threshold_masks[i], positions, units),
               tp=tp) for i, (name, tp) in enumerate(zip(names, tps))]


def _meta(names: Sequence[str], totals: Sequence[dict]) -> dict:
  """The checkpoint's JSON: every threshold's running totals, by name."""
  return {'algorithms': dict(zip(names, totals))}
