"""PruneFL (Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge Devices",
IEEE TNNLS 2022; reference code github.com/jiangyuang/PruneFL) on our round engine.

Unstructured pruning of kernel weights (`masks.is_prunable`); biases and normalisation parameters
are always kept, as PruneFL keeps its non-prunable parameters.

Reconfiguration (their `control/algorithm.py`: `process_layer`, `architecture_search`). Given the
current mask M, the current weights w, the importance g² of every weight and the time model below:
  1. decrease: in each kernel leaf, the `d` share of its kept weights with the smallest |w|
     (d = MAX_DEC_DIFF * 0.5 ** (round / ADJ_HALF_LIFE) = 0.3, their defaults) become candidates;
     the others are kept for sure (`tbk`: kept and |w| >= the d-quantile of kept |w|);
  2. increase: every pruned weight is a candidate too;
  3. greedy: with N = Σ g² over the sure set and the non-prunable leaves and D = T0 + Σ c_l over
     the sure set, candidates are taken in decreasing g²/c_l (one sorted list per leaf, merged;
     ties by leaf order, then flat index) while g²/c_l > N / D, each adding g² to N and c_l to D.
     Taking a candidate raises N / D exactly when its own ratio exceeds N / D, and the list is
     sorted, so this maximises N / D (importance per second of round time) over all kept sets
     that contain the sure set: their "maximise the approximate empirical risk reduction divided
     by the time of one FL round".
Importance g² is the accumulated squared gradient since the last reconfiguration, then reset.

Time model: the estimated time of one round of one client, in seconds,
    T(M) = T0 + Σ_l |M_l| c_l,     c_l = COMM_COEFFICIENT + comp_l,
  * COMM_COEFFICIENT = 5.5616e-6 s per parameter (their measured value, configs/*.py);
  * comp_l = SECONDS_PER_FLOP x 6 x positions_l x E x n: training a kept weight costs 6 FLOPs per
    example and output position (2 forward, 4 backward), positions_l as in `accounting`
    (H'W' for a conv, 1 for a dense layer, time steps for an LSTM, 0 for an embedding lookup),
    E = local_epochs, n = the initial-pruning client's example count (a typical client's work in
    a round). They measured comp_l per layer on a Raspberry Pi; we derive it from FLOPs, with
    SECONDS_PER_FLOP = 1.61e-9 from their FEMNIST dense-layer coefficient (1.927e-7 s per weight
    per local update of 20 examples, / 20 / 6);
  * T0 = FIXED_TIME_RATIO x the dense model's Σ_l N_l c_l, FIXED_TIME_RATIO = 0.14, the ratio of
    their TIME_CONSTANT (6.25 s) to that sum in their FEMNIST config (about 44.8 s).

Initial pruning (their `AdaptiveServer.initial_pruning`): one client, chosen by the seed, trains
θ0 on its first `prunefl_init_examples` examples (their 200 = 10 batches of 20) with the clients'
optimizer and learning rate, and reconfigures after every `prunefl_interval` passes over them
(their IP_ADJ_INTERVAL = ADJ_INTERVAL), `prunefl_init_steps` times. Its squared gradients are
dense (pruned weights included), so weights can come back here. Only the mask is kept: every
algorithm starts the federated rounds from the same θ0 (their `reinitialize` variant).

Federated rounds: the round reports `RoundMetrics.grad_sq`, the cohort's example-weighted mean of
each client's Σ_steps g², accumulated in the state's `importance`; after every `prunefl_interval`-th
round (not after the last) the mask is reconfigured and the accumulator reset.

Where we deviate, and why:
  * None on regrowth: `local.train` accumulates the square of the gradient at the masked point
    before masking it (the same value for kept weights, the dense gradient for pruned ones), as
    PruneFL's sparse layers do, so weights pruned during FL can come back at a reconfiguration.
  * Their client accumulates (Σ_steps g)² n_k; the engine gives Σ_steps g², example-weighted.
    (A common scale does not change the reconfiguration: it only compares ratios.)
  * No start-accuracy gate (ADJ_THR_ACC) and no density early stopping in initial pruning: a
    fixed number of reconfigurations, `prunefl_init_steps`; no max-density bound.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from autoflip_jax import accounting, local, masks
from autoflip_jax.algorithms.base import Algorithm, Start
from autoflip_jax.fields import check_int
from autoflip_jax.masks import apply_mask

PyTree = Any
COMM_COEFFICIENT = 5.561621025626998e-06  # s per parameter
TRAIN_FLOPS_PER_WEIGHT = 6                # per example and output position
SECONDS_PER_FLOP = 1.927325e-7 / (20 * TRAIN_FLOPS_PER_WEIGHT)
FIXED_TIME_RATIO = 0.14
MAX_DEC_DIFF = 0.3
ADJ_HALF_LIFE = 10000
INIT_CLIENT_STREAM = 3  # numpy seed stream of the initial-pruning client


def check_config(config, names) -> None:
  del names
  check_int(config, 'prunefl_interval', 1)
  check_int(config, 'prunefl_init_examples', 1)
  check_int(config, 'prunefl_init_steps', 0)


def max_decrease(round_num: int) -> float:
  """The share of kept weights that may be dropped at a reconfiguration after `round_num`."""
  return MAX_DEC_DIFF * 0.5 ** (round_num / ADJ_HALF_LIFE)


def initial_client(num_clients: int, seed: int) -> int:
  return int(np.random.default_rng([seed, INIT_CLIENT_STREAM]).integers(num_clients))


def cost_coefficients(params0: PyTree, positions: dict, examples_per_round: int) -> tuple[
    PyTree, float]:
  """(c_l per leaf, 0 for non-prunable leaves; T0): the time model of the module docstring."""
  flat = traverse_util.flatten_dict(params0)
  comp = SECONDS_PER_FLOP * TRAIN_FLOPS_PER_WEIGHT * examples_per_round
  coeff = {path: np.float32(COMM_COEFFICIENT + comp * positions.get(path, 0)
                            if masks.is_prunable(p) else 0.0) for path, p in flat.items()}
  variable = sum(float(coeff[path]) * int(np.prod(p.shape)) for path, p in flat.items())
  return traverse_util.unflatten_dict(coeff), FIXED_TIME_RATIO * variable


def round_seconds(mask: PyTree, coeff: PyTree, time_constant: float) -> float:
  """T(M), the estimated round time of one client under `mask`."""
  return time_constant + sum(float(c) * int(np.count_nonzero(np.asarray(m)))
                             for m, c in zip(jax.tree.leaves(mask), jax.tree.leaves(coeff)))


def reconfigure(params: PyTree, mask: PyTree, importance: PyTree, coeff: PyTree,
                time_constant: float, decrease: float) -> PyTree:
  """The new mask: decrease, increase and the greedy ratio search of the module docstring."""
  leaves_p, treedef = jax.tree.flatten(params)
  leaves_m = [np.asarray(m, bool) for m in treedef.flatten_up_to(mask)]
  leaves_g = [np.asarray(g, np.float64) for g in treedef.flatten_up_to(importance)]
  leaves_c = [float(c) for c in treedef.flatten_up_to(coeff)]
  numerator, denominator = 0.0, float(time_constant)
  new, cand = [], []  # cand: (leaf, flat indices, importances) sorted by importance, descending
  for leaf, (p, m, g, c) in enumerate(zip(leaves_p, leaves_m, leaves_g, leaves_c)):
    if not masks.is_prunable(m):
      numerator += float(g[m].sum())
      new.append(m.copy())
      continue
    w, m_flat, g_flat = np.abs(np.asarray(p)).ravel(), m.ravel(), g.ravel()
    kept = np.flatnonzero(m_flat)
    sure = np.zeros_like(m_flat)
    if kept.size:
      threshold = np.sort(w[kept])[int(decrease * kept.size)]
      sure = m_flat & (w >= threshold)
    numerator += float(g_flat[sure].sum())
    denominator += c * int(sure.sum())
    idx = np.flatnonzero(~sure)
    order = np.argsort(-g_flat[idx], kind='stable')
    cand.append((leaf, idx[order], g_flat[idx][order]))
    new.append(sure)
  if cand:
    leaf_id = np.concatenate([np.full(len(i), l) for l, i, _ in cand])
    index = np.concatenate([i for _, i, _ in cand])
    value = np.concatenate([v for _, _, v in cand])
    cost = np.concatenate([np.full(len(i), leaves_c[l]) for l, i, _ in cand])
    order = np.argsort(-(value / cost), kind='stable')
    value, cost = value[order], cost[order]
    num_before = numerator + np.concatenate([[0.0], np.cumsum(value)[:-1]])
    den_before = denominator + np.concatenate([[0.0], np.cumsum(cost)[:-1]])
    better = value * den_before > num_before * cost  # g²/c > N/D, without dividing
    taken = len(better) if better.all() else int(np.argmin(better))
    for l, i in zip(leaf_id[order[:taken]], index[order[:taken]]):
      new[l][i] = True
  out = [n if n.shape == m.shape else n.reshape(m.shape) for n, m in zip(new, leaves_m)]
  return jax.tree.unflatten(treedef, [jnp.asarray(m) for m in out])


def _sample(pack, client: int, count: int):
  """The client's first `count` examples (host arrays) and its total example count."""
  data, num = pack(np.array([client]))
  n = int(num[0])
  x = np.asarray(data.x[0]).reshape((-1,) + data.x.shape[3:])[:n][:count]
  y = np.asarray(data.y[0]).reshape(-1)[:n][:count]
  return x, y, n


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int):
  """Fixed batches `[batches, batch, ...]` with a validity mask (the last one padded)."""
  batches = -(-len(y) // batch_size)
  pad = batches * batch_size - len(y)
  shape = lambda a: a.reshape((batches, batch_size) + a.shape[1:])
  xb = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
  yb = np.concatenate([y, np.zeros((pad,), y.dtype)])
  return shape(xb), shape(yb), shape(np.arange(len(yb)) < len(y))


def _make_pass(apply_fn, tx: optax.GradientTransformation):
  """One pass over the fixed batches: masked training, dense squared gradients accumulated."""
  def loss_fn(p, x, y, v):
    total, n = local.cross_entropy(apply_fn, p, x, y, v)
    return total / jnp.maximum(n, 1.0)

  @jax.jit
  def one_pass(params, opt_state, mask, importance, xb, yb, vb):
    def step(carry, batch):
      p, s, imp = carry
      grads = jax.grad(loss_fn)(p, *batch)  # every weight's gradient, pruned ones included
      imp = jax.tree.map(lambda a, g: a + jnp.square(g), imp, grads)
      updates, s = tx.update(apply_mask(grads, mask), s, p)
      return (apply_mask(optax.apply_updates(p, updates), mask), s, imp), None
    (params, opt_state, importance), _ = jax.lax.scan(
        step, (params, opt_state, importance), (xb, yb, vb))
    return params, opt_state, importance
  return one_pass


def init(context, params0: PyTree, rng, tps) -> list[Start]:
  """Initial pruning on one client (module docstring); the time model into the state."""
  del rng, tps
  config, apply_fn = context.config, context.apply_fn
  start = time.time()
  client = initial_client(config.num_clients, context.seed)
  x, y, n_client = _sample(context.pack, client, config.prunefl_init_examples)
  coeff, time_constant = cost_coefficients(params0, context.positions,
                                           config.local_epochs * n_client)
  mask = masks.ones_mask(params0)
  zeros = lambda: jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params0)
  if config.prunefl_init_steps:
    tx = local.make_optimizer(config.optimizer, config.learning_rate)
    one_pass = _make_pass(apply_fn, tx)
    xb, yb, vb = _batches(x, y, config.batch_size)
    params, opt_state = params0, tx.init(params0)
    for _ in range(config.prunefl_init_steps):
      importance = zeros()
      for _ in range(config.prunefl_interval):
        params, opt_state, importance = one_pass(params, opt_state, mask, importance, xb, yb, vb)
      mask = reconfigure(params, mask, importance, coeff, time_constant, MAX_DEC_DIFF)
      params = apply_mask(params, mask)
  total, kept = accounting.total_params(params0), accounting.kept_params(mask)
  # The chosen client downloads the dense θ0 and uploads the pruned model with its mask.
  up = accounting.round_bytes(kept, total, 1, kept < total)[1]
  down = total * accounting.VALUE_BYTES
  state = {'importance': zeros(), 'coeff': jax.tree.map(jnp.asarray, coeff),
           'time_constant': jnp.float32(time_constant)}
  info = {'init_client': client, 'init_examples': int(len(y)),
          'init_reconfigurations': int(config.prunefl_init_steps),
          'time_constant_s': float(time_constant),
          'est_round_s_dense': round_seconds(masks.ones_mask(params0), coeff, time_constant),
          'est_round_s_init': round_seconds(mask, coeff, time_constant)}
  return [Start(mask, state, up, down, time.time() - start, info)]


def state_like(context, params0: PyTree) -> dict:
  """The shapes of PruneFL's state: importance, the time model's coefficients and constant."""
  f32 = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  return {'importance': jax.tree.map(lambda p: f32(p.shape), params0),
          'coeff': jax.tree.map(lambda p: f32(()), params0), 'time_constant': f32(())}


def make(config, units) -> Algorithm:
  """Squared gradients from every round; a reconfiguration every `prunefl_interval` rounds."""
  del units

  def update(round_num, params, mask, metrics, state):
    importance = jax.tree.map(jnp.add, state['importance'], metrics.grad_sq)
    if round_num % config.prunefl_interval or round_num >= config.num_rounds:
      return None, dict(state, importance=importance)
    new_mask = reconfigure(params, mask, importance, state['coeff'],
                           float(state['time_constant']), max_decrease(round_num))
    return new_mask, dict(state, importance=jax.tree.map(jnp.zeros_like, importance))

  return Algorithm('prunefl', init, state_like=state_like, update=update, track_grad_sq=True)
