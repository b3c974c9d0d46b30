"""Federated loss exploration and the server's guidance matrix (AutoFLIP Sec. 3.1; AUTOFLIP.md §1).

Before federated training, each explorer client k trains a copy of the initial global model θ0 on
its own data for up to `e_exp` epochs (early stopping with `patience` on its training loss) and
reports the per-parameter squared deviation (θk − θ0)². All explorers run in ONE compiled program:
`local.train` `vmap`ped over the explorer axis inside one `jax.jit`.

The server's guidance for every parameter tensor W is

    G_W = normalise( mean_k (θk_W − θ0_W)² ),

a plain mean as in the reference code, or the example-weighted mean (`weighted=True`), normalised
per tensor (min-max by default, see `masks.normalize`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from autoflip_jax import federated, local
from autoflip_jax.masks import normalize, ones_mask

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
                   trajectory: bool = False) -> tuple[PyTree, jax.Array, jax.Array]:
  """One explorer: local training from θ0, returning its squared deviation, last loss, epochs."""
  out = local.train(params0, ones_mask(params0), data, key, apply_fn=apply_fn, optimizer=optimizer,
                    learning_rate=learning_rate, epochs=epochs, patience=patience,
                    track_deviation=trajectory)
  sqdev = out.deviation if trajectory else deviation(out.params, params0)
  return sqdev, out.last_loss, out.epochs_run


def make_explore_fn(apply_fn, *, optimizer: str, learning_rate: float, epochs: int,
                    patience: int, trajectory: bool = False, clients_per_chunk: int = 0):
  """Returns jitted `explore(params0, data [K, steps, batch, ...], client_ids [K], rng)`.

  All explorers in one program, `clients_per_chunk` at a time (`federated.chunked_map`: 0 one
  vmap, 1 one explorer after another, which also lets each stop early on its own).
  """
  def explore(params0, data: local.ClientData, client_ids, rng) -> Exploration:
    keys = jax.vmap(lambda c: jax.random.fold_in(rng, c))(client_ids)
    one = lambda d, k: explore_client(params0, d, k, apply_fn=apply_fn, optimizer=optimizer,
                                      learning_rate=learning_rate, epochs=epochs,
                                      patience=patience, trajectory=trajectory)
    sqdev, loss, epochs_run = federated.chunked_map(one, (data, keys), clients_per_chunk)
    return Exploration(sqdev, loss, epochs_run)
  return jax.jit(explore)


def guidance(sqdev: PyTree, weights: jax.Array | None = None,
             normalization: str = 'minmax') -> PyTree:
  """Server aggregation: mean over explorers (axis 0) of the squared deviations, normalised.

  `weights` ([explorers], e.g. example counts) makes the mean weighted; explorers of weight 0 are
  ignored. With `weights=None` every explorer counts equally (the reference code).
  """
  if weights is None:
    mean = jax.tree.map(lambda d: jnp.mean(d, axis=0), sqdev)
  else:
    w = weights.astype(jnp.float32)
    w = w / jnp.maximum(jnp.sum(w), 1e-12)
    mean = jax.tree.map(lambda d: jnp.tensordot(w, d, axes=1), sqdev)
  return normalize(mean, normalization)
