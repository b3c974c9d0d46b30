"""Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization") as optax transforms.

The round's masked, example-weighted average θ̄ of the clients' models gives the server a
pseudo-gradient g = θ_t − θ̄ (minus the average update). A server optimizer turns it into the
next global model, inside the jitted round:

  sgd       θ_{t+1} = θ_t − η g            (η = 1 is FedAvg: θ_{t+1} = θ̄)
  momentum  FedAvgM: v = β v + g, θ_{t+1} = θ_t − η v (the reference code's server, β = 0.9)
  adam      FedAdam: Adam on g with b1, b2 and ε = τ (Reddi et al.'s τ = 1e-3)
  yogi      FedYogi: Yogi on g, same parameters

Masks (AUTOFLIP.md §3): g is 0 on pruned coordinates (θ_t and θ̄ both are), the update is
masked again and the optimizer's state too (`mask_state`), so pruned coordinates and their
momentum or moments stay exactly 0, also when a mask changes between rounds. A round with no
examples leaves the model and the state unchanged.

`sgd` with η = 1 is FedAvg exactly: `make` returns None and the round keeps θ̄ itself (no
θ_t − (θ_t − θ̄) rounding).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from autoflip_jax.masks import apply_mask

PyTree = Any
OPTIMIZERS = ('sgd', 'momentum', 'adam', 'yogi')


def make(name: str, learning_rate: float = 1.0, momentum: float = 0.9, b1: float = 0.9,
         b2: float = 0.99, eps: float = 1e-3) -> optax.GradientTransformation | None:
  """The server optimizer `name`; None for plain FedAvg (sgd with learning rate 1)."""
  if name == 'sgd':
    return None if learning_rate == 1.0 else optax.sgd(learning_rate)
  if name == 'momentum':
    return optax.sgd(learning_rate, momentum=momentum)
  if name == 'adam':
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  if name == 'yogi':
    return optax.yogi(learning_rate, b1=b1, b2=b2, eps=eps)
  raise ValueError(f'config.server_optimizer={name!r} is not one of {OPTIMIZERS}')


def from_config(config) -> optax.GradientTransformation | None:
  """`make` with the config's server fields."""
  return make(config.server_optimizer, config.server_learning_rate, config.server_momentum,
              config.server_b1, config.server_b2, config.server_eps)


def mask_state(opt_state: PyTree, mask: PyTree) -> PyTree:
  """Zeroes every params-shaped part of an optax state (momentum, moments) where pruned."""
  structure = jax.tree.structure(mask)
  is_params = lambda x: jax.tree.structure(x) == structure
  return jax.tree.map(lambda x: apply_mask(x, mask) if is_params(x) else x, opt_state,
                      is_leaf=is_params)


def init(tx: optax.GradientTransformation | None, params: PyTree) -> PyTree:
  """The optimizer's initial state (() for plain FedAvg)."""
  return () if tx is None else tx.init(params)


def step(tx: optax.GradientTransformation | None, global_params: PyTree, average: PyTree,
         opt_state: PyTree, mask: PyTree, has_data: jax.Array) -> tuple[PyTree, PyTree]:
  """(θ_{t+1}, state) from θ_t, the masked average θ̄ and the server optimizer's state."""
  if tx is None:
    return average, opt_state
  grads = jax.tree.map(jnp.subtract, global_params, average)
  updates, new_state = tx.update(grads, opt_state, global_params)
  params = apply_mask(optax.apply_updates(global_params, apply_mask(updates, mask)), mask)
  new_state = mask_state(new_state, mask)
  keep = lambda new, old: jnp.where(has_data, new, old)
  return (jax.tree.map(keep, params, global_params),
          jax.tree.map(keep, new_state, mask_state(opt_state, mask)))
