"""AutoFLIP (arXiv 2405.10271 v3): federated loss exploration, guidance, the hybrid mask.

Before round 1 (`init`; AUTOFLIP.md §1-2): a `c_exp` fraction of the clients (`explorer_ids`,
fixed by the seed) each train θ0 for up to `e_exp` epochs, all in one compiled program
(`exploration.make_explore_fn`), and report (θk − θ0)²; the server's guidance matrix
G = normalise(mean_k (θk − θ0)²) is binarised with Tp into the hybrid mask
(`masks.hybrid_mask`: the global Tp quantile over kernel weights, then whole units). The
exploration does not depend on Tp, so a Tp sweep explores once and builds one mask per
threshold.

Tp chosen by a target (`target_compression`, or `target_flops` as a fraction of the dense
model's FLOPs per example after structured removal): `choose_tp` bisects Tp on the mask built
from the guidance, before round 1 and without any federated training, for the smallest Tp that
reaches the target (compression and removed FLOPs only grow with Tp); the Tp found is logged
and recorded in the summary (`tp_chosen`). An unreachable target stops the run with the range
that can be reached.

The reference code's chained exploration (`exploration_chain`, docs/reference_protocol.md): its
explorers train one shared model in place, each from where the previous one stopped, its saved
reports all alias that one model, and its federated training starts from the chain's last model,
pruned. `'autoflip'` reproduces that (AutoFLIP alone starts from the chain's end, the other
algorithms from θ0, as in the reference); `'all'` starts every algorithm of the run from the same
chain's end, the fair control (the chain is run once per seed, `Context.chain`); `'start'` also
starts every algorithm from the chain's end, but AutoFLIP's guidance comes from the paper's
independent explorers of that model (does the paper's guidance beat the controls from a trained
start?). Off by default: it is not the paper's method (a mean over independent explorers from
θ0) but what the code does.

With `guidance_per_round` (needs `c_exp = 1`, as in the reference code) the algorithm's state
is every client's exploration, and each round's mask is rebuilt on the device, inside the
jitted round, from the explorations of that round's cohort (`round_mask`).

Trustworthy exploration (docs/robustness.md; `exploration.py` holds the transforms). After the
explorers ran, the server (1) lets the attackers of the threat simulation craft their reports
(`attack.fraction` of the explorers, the first of a seeded permutation: `attackers`), (2) clips
every report to L2 norm `dp.exploration_clip` (0 = off), (3) aggregates with
`guidance_aggregation` (`mean`, `median`, `trimmed_mean` cutting `guidance_trim` at each end)
or, with `dp.exploration_noise` z > 0, releases the noised sum (Σ_k r_k + N(0, (zC)²)) / K:
central DP on the mean only (a median or trimmed mean has no small L2 sensitivity, so
`check_config` refuses it with noise, and the example-weighted mean likewise). ε at `dp.delta`
(`privacy.exploration_epsilon`) is logged and recorded as `epsilon_exploration`. With
`guidance_per_round` every client's clipped report is noised on its own (std zC) once, before
round 1, and the rounds reuse them (post-processing: counted once). With every new field at its
default none of these steps runs: the guidance and mask are the ones of before.
"""

from __future__ import annotations

import functools
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import accounting, exploration, federated, local, masks, privacy
from autoflip_jax.fields import check_buckets, check_choice, check_float, check_int
from autoflip_jax.algorithms.base import Algorithm, Start


def check_config(config, names) -> None:
  """AutoFLIP's fields (always: a bad value is wrong in any run); its rules when it runs."""
  check_float(config, 'tp', 0.0, 1.0, False, True)
  check_int(config, 'e_exp', 0)
  check_float(config, 'c_exp', 0.0, 1.0, True, False)
  check_int(config, 'patience', 0)
  check_choice(config, 'exploration_optimizer', ('',) + local.OPTIMIZERS)
  check_float(config, 'exploration_learning_rate', 0.0, float('inf'), False, True)
  check_choice(config, 'guidance_normalization', ('minmax', 'robust'))
  check_float(config, 'structured_threshold', 0.0, 1.0, True, False)
  check_float(config, 'structured_tp', 0.0, 1.0, False, True)
  check_choice(config, 'structured_rule', STRUCTURED_RULES)
  if config.structured_rule == 'share' and config.structured_tp > 0:
    raise ValueError(f"config.structured_tp={config.structured_tp!r} with config.structured_rule="
                     f"'share': the share rule does not score units by guidance; use "
                     f"structured_rule='layer' or 'global' with it")
  if 'autoflip' in names and config.e_exp < 1:
    raise ValueError('config.e_exp=0 with algorithm autoflip: exploration needs at least one '
                     'epoch (with none, every guidance value is 0, all tie at the threshold and '
                     'the tie rule prunes every weight)')
  if config.guidance_per_round and config.c_exp != 1.0:
    raise ValueError(f'config.guidance_per_round=True needs config.c_exp=1.0 (every client must '
                     f'have explored), got c_exp={config.c_exp}')
  check_int(config, 'mask_ramp_rounds', 0)
  if config.mask_ramp_rounds and config.guidance_per_round:
    raise ValueError(f'config.mask_ramp_rounds={config.mask_ramp_rounds} cannot be combined with '
                     f'config.guidance_per_round=True (the per-round mask is built at Tp itself)')
  if config.mask_ramp_rounds > config.num_rounds:
    raise ValueError(f'config.mask_ramp_rounds={config.mask_ramp_rounds} exceeds '
                     f'config.num_rounds={config.num_rounds}: the mask would never reach Tp')
  check_float(config, 'target_compression', 0.0, float('inf'), False, True)
  check_float(config, 'target_flops', 0.0, 1.0, False, False)
  target = target_of(config)
  if 0 < config.target_compression < 1:
    raise ValueError(f'config.target_compression={config.target_compression!r} is below 1x: a '
                     f'compression is total / kept parameters, at least 1 (0 = off)')
  if config.target_compression and config.target_flops:
    raise ValueError('config.target_compression and config.target_flops are both set: choose Tp '
                     'by one of them (0 = off)')
  if target and str(config.tp_sweep).strip():
    raise ValueError(f'config.{target[0]}={target[1]!r} and config.tp_sweep={config.tp_sweep!r}: '
                     f'a target chooses one Tp, a sweep gives several; set one of them off')
  check_chain(config)
  if target and config.guidance_per_round:
    raise ValueError(f'config.{target[0]}={target[1]!r} cannot be combined with '
                     f'config.guidance_per_round=True (the target is met once, before round 1)')
  check_trustworthy(config)


# `exploration_chain`: off, the reference's, its control, the paper's guidance from the chain's end
CHAIN_MODES = ('', 'autoflip', 'all', 'start')
CHAIN_GUIDES = ('autoflip', 'all')  # the modes whose guidance is the chain's one report
CHAIN_STARTS_ALL = ('all', 'start')  # the modes that start every algorithm from the chain's end


def chain_guides(config) -> bool:
  """Whether AutoFLIP's guidance and start are the chain's (else explorers as the paper's)."""
  return config.exploration_chain in CHAIN_GUIDES


def check_chain(config) -> None:
  """`exploration_chain`: one of CHAIN_MODES; the chain gives one report (its last model's
  deviation), so nothing that works on several reports or on every client's goes with it."""
  check_choice(config, 'exploration_chain', CHAIN_MODES)
  if not chain_guides(config):
    return  # 'start' explores the chain's end with the paper's independent explorers
  clashes = [(name, value) for name, value, off in (
      ('guidance_per_round', config.guidance_per_round, False),
      ('exploration_trajectory', config.exploration_trajectory, False),
      ('guidance_weighted', config.guidance_weighted, False),
      ('guidance_aggregation', config.guidance_aggregation, 'mean'),
      ('guidance_bucket', config.guidance_bucket, 1),
      ('attack.fraction', config.attack.fraction, 0.0),
      ('dp.exploration_clip', config.dp.exploration_clip, 0.0),
      ('dp.exploration_noise', config.dp.exploration_noise, 0.0)) if value != off]
  if clashes:
    name, value = clashes[0]
    raise ValueError(f'config.exploration_chain={config.exploration_chain!r} with config.{name}='
                     f'{value!r}: the chained exploration gives one report (the last model\'s '
                     f'deviation from θ0), so per-explorer reports, their aggregation, attacks '
                     f'and private exploration do not apply; set exploration_chain=\'\' for them')


def check_trustworthy(config) -> None:
  """The fields of private and robust exploration and of the threat simulation."""
  check_choice(config, 'guidance_aggregation', exploration.AGGREGATIONS)
  check_float(config, 'guidance_trim', 0.0, 0.5, False, True)
  check_float(config, 'guidance_filter_z', 0.0, float('inf'), True, True)
  check_bucket(config)
  check_float(config, 'dp.exploration_clip', 0.0, float('inf'), False, True)
  check_float(config, 'dp.exploration_noise', 0.0, float('inf'), False, True)
  check_float(config, 'dp.delta', 0.0, 1.0, True, True)
  check_choice(config, 'attack.kind', exploration.ATTACKS)
  check_float(config, 'attack.fraction', 0.0, 1.0, False, True)
  dp = config.dp
  if dp.exploration_noise > 0 and dp.exploration_clip <= 0:
    raise ValueError(f'config.dp.exploration_noise={dp.exploration_noise!r} needs '
                     f'config.dp.exploration_clip > 0 (got {dp.exploration_clip!r}): the noise '
                     f'is calibrated to the clip, the sensitivity of the summed reports')
  if dp.exploration_noise > 0 and config.guidance_aggregation != 'mean':
    raise ValueError(f'config.dp.exploration_noise={dp.exploration_noise!r} with '
                     f'config.guidance_aggregation={config.guidance_aggregation!r}: private '
                     f"exploration noises the sum, so it needs 'mean'")
  if config.guidance_weighted and config.guidance_aggregation != 'mean':
    raise ValueError(f'config.guidance_weighted=True with config.guidance_aggregation='
                     f"{config.guidance_aggregation!r}: only 'mean' takes example weights")
  if config.guidance_weighted and dp.exploration_noise > 0:
    raise ValueError(f'config.guidance_weighted=True with config.dp.exploration_noise='
                     f'{dp.exploration_noise!r}: the private mean is the plain mean of the '
                     f'clipped reports (its sensitivity does not depend on the data)')


def check_bucket(config) -> None:
  """`guidance_bucket`: an int >= 1; above 1 only for the median or trimmed mean of a fixed
  mask's explorers (`fields.check_buckets`)."""
  count = len(explorer_ids(config.num_clients, config.c_exp, 0))
  check_int(config, 'guidance_bucket', 1, count)
  if config.guidance_bucket > 1 and config.guidance_per_round:
    raise ValueError(f'config.guidance_bucket={config.guidance_bucket!r} with '
                     f'config.guidance_per_round=True: bucketing is for the guidance of a fixed '
                     f'mask; set guidance_bucket=1')
  groups = federated.num_buckets(count, config.guidance_bucket)
  check_buckets(config, 'guidance', count, f'the {count} explorers', groups,
                federated.trim_count(config.guidance_trim, groups))


def target_of(config) -> tuple[str, float] | None:
  """('target_compression' or 'target_flops', value) when Tp is chosen by a target, else None."""
  for field in ('target_compression', 'target_flops'):
    if config[field]:
      return field, float(config[field])
  return None


TP_MAX = 0.999   # the largest Tp `choose_tp` tries (Tp is a quantile in [0, 1))
TP_STEPS = 20    # bisection steps: Tp to within 1e-6


def choose_tp(guidance, params0, *, config, units, positions) -> tuple[float, float]:
  """The smallest Tp whose mask reaches the config's target, and the figure it reaches.

  Raises ValueError naming the target and the range Tp in [0, TP_MAX] can reach.
  """
  field, target = target_of(config)
  build = jax.jit(lambda g, tp: mask_from_guidance(config, units, tp)(g))
  total = accounting.total_params(params0)
  dense = accounting.flops_per_example(params0, None, positions, 'dense')

  def figure(tp: float) -> float:
    mask = jax.tree.map(np.asarray, build(guidance, jnp.float32(tp)))
    if field == 'target_compression':
      return total / max(accounting.kept_params(mask), 1)
    return accounting.flops_per_example(params0, mask, positions, 'structured') / dense

  reached = (lambda v: v >= target) if field == 'target_compression' else (lambda v: v <= target)
  low, high = 0.0, TP_MAX
  at_low, at_high = figure(low), figure(high)
  if reached(at_low):
    return low, at_low
  if not reached(at_high):
    what = ('compression from {:.3g}x to {:.3g}x' if field == 'target_compression' else
            'structured FLOPs per example from {:.3g} to {:.3g} of dense')
    raise ValueError(f'config.{field}={target!r} cannot be reached: Tp in [0, {TP_MAX}] gives '
                     f'{what.format(at_low, at_high)} with this guidance and structured rule '
                     f'(structured_rule={config.structured_rule!r}, structured_threshold='
                     f'{config.structured_threshold}, structured_tp={config.structured_tp}); '
                     f'choose a target in that range')
  for _ in range(TP_STEPS):
    mid = (low + high) / 2
    value = figure(mid)
    if reached(value):
      high, at_high = mid, value
    else:
      low = mid
  return high, at_high


def explorer_ids(num_clients: int, c_exp: float, seed: int) -> np.ndarray:
  """The explorer clients: round(c_exp * K) of them (at least 1), fixed by the seed."""
  count = max(1, int(round(c_exp * num_clients)))
  rng = np.random.default_rng([seed, 2])
  return np.sort(rng.choice(num_clients, size=count, replace=False))


ATTACK_STREAM = 5              # numpy stream of the attackers' choice
ATTACK_KEY = 0x7FFF0001       # fold_in tags of the init key (far above any explorer's client id)
NOISE_KEY = 0x7FFF0002
BUCKET_KEY = 0x7FFF0003        # the random order of `guidance_bucket`'s buckets


def attackers(num_explorers: int, fraction: float, seed: int) -> np.ndarray:
  """Positions (among the explorers) of the attacking ones: the first round(fraction * count)
  of a permutation fixed by the seed."""
  count = int(round(fraction * num_explorers))
  order = np.random.default_rng([seed, ATTACK_STREAM]).permutation(num_explorers)
  return np.sort(order[:count])


def server_reports(config, sqdev, rng, seed: int):
  """The reports as the server uses them: attacked, clipped, and (per-round guidance with
  noise) noised one by one. Each step runs only when its field is on."""
  if config.attack.fraction > 0:
    bad = attackers(jax.tree.leaves(sqdev)[0].shape[0], config.attack.fraction, seed)
    sqdev = exploration.attack(sqdev, bad, config.attack.kind,
                               jax.random.fold_in(rng, ATTACK_KEY))
  dp = config.dp
  if dp.exploration_clip > 0:
    sqdev = exploration.clip_each(sqdev, dp.exploration_clip)
  if dp.exploration_noise > 0 and config.guidance_per_round:
    noise = exploration.gaussian_like(sqdev, jax.random.fold_in(rng, NOISE_KEY),
                                      dp.exploration_noise * dp.exploration_clip)
    sqdev = jax.tree.map(jnp.add, sqdev, noise)
  return sqdev


def server_guidance(config, sqdev, weights, rng, outlier=None):
  """The guidance from the server's reports: the noised mean (private exploration with a fixed
  mask) or the configured aggregation (`outlier`: `filtered_mean`'s flags, if computed)."""
  dp = config.dp
  if dp.exploration_noise > 0 and not config.guidance_per_round:
    mean = exploration.noisy_mean(sqdev, dp.exploration_noise * dp.exploration_clip,
                                  jax.random.fold_in(rng, NOISE_KEY))
    return masks.normalize(mean, config.guidance_normalization)
  return exploration.guidance(sqdev, weights, config.guidance_normalization,
                              config.guidance_aggregation, config.guidance_trim,
                              config.guidance_filter_z, outlier,
                              bucket=config.guidance_bucket,
                              key=jax.random.fold_in(rng, BUCKET_KEY))


STRUCTURED_RULES = ('layer', 'global', 'share')


def structured_args(config, tp) -> dict:
  """The structured stage's arguments of `masks.hybrid_mask` for the config's rule at `tp`.

  `layer` / `global`: units scored by guidance, cut at the quantile `structured_tp`, or at Tp
  itself when it is 0 (one threshold for both levels); `share`: by the pruned share alone.
  Every rule also removes a unit once `structured_threshold` of its incoming weights is pruned.
  """
  rule = config.structured_rule
  if rule == 'share':
    return dict(structured_threshold=config.structured_threshold, structured_tp=None)
  quantile = config.structured_tp if config.structured_tp > 0 else tp
  return dict(structured_threshold=config.structured_threshold, structured_tp=quantile,
              scope=rule)


def mask_from_guidance(config, units, tp: float):
  """`guidance -> hybrid mask` at threshold `tp` with the config's structured rule."""
  return functools.partial(masks.hybrid_mask, tp=tp, units=units,
                           **structured_args(config, tp))


def kernel_kept(mask) -> int:
  """Kept kernel weights (leaves with ndim >= 2): the controls' target count."""
  return int(sum(int(jnp.sum(m)) for m in jax.tree.leaves(mask) if masks.is_prunable(m)))


def explorer_training(config) -> dict:
  """How explorers train: `exploration_optimizer` / `exploration_learning_rate`, or where those
  are unset ('' / 0) the clients' `optimizer` / `learning_rate`; `e_exp` epochs, `patience`."""
  return dict(optimizer=config.exploration_optimizer or config.optimizer,
              learning_rate=config.exploration_learning_rate or config.learning_rate,
              epochs=config.e_exp, patience=config.patience, max_steps=config.max_local_steps)


def explore_fn(config, apply_fn, clients_per_chunk: int):
  """The jitted exploration of `config` (`exploration.make_explore_fn` with its fields)."""
  return exploration.make_explore_fn(apply_fn, trajectory=config.exploration_trajectory,
                                     clients_per_chunk=clients_per_chunk,
                                     **explorer_training(config))


def run_chain(context, params0, rng):
  """The seed's chained exploration from `params0` (`exploration.make_chain_fn` over the
  explorers in id order): (params0, `exploration.Chain`, seconds)."""
  config = context.config
  ids = explorer_ids(config.num_clients, config.c_exp, context.seed)
  chain = exploration.make_chain_fn(context.apply_fn, **explorer_training(config))
  start = time.time()
  data, _ = context.pack(ids)
  result = chain(params0, data, jnp.asarray(ids), rng)
  jax.block_until_ready(result.params)
  return params0, result, time.time() - start


def explorer_outliers(config, reports) -> jax.Array | None:
  """`filtered_mean`'s flags over the explorers (`exploration.explorer_outliers`), else None."""
  if config.guidance_aggregation != 'filtered_mean':
    return None
  outlier, _, _ = jax.jit(exploration.explorer_outliers, static_argnums=1)(
      reports, float(config.guidance_filter_z))
  return outlier


def dropped_explorers(outlier, ids) -> list[int]:
  """The client ids of the explorers flagged in `outlier`."""
  return [int(ids[i]) for i in np.flatnonzero(np.asarray(outlier))]


def init(context, params0, rng, tps) -> list[Start]:
  """Exploration (one compiled program over all explorers), then one hybrid mask per Tp.

  Every element reports the whole exploration's bytes and seconds, as its own run would.
  """
  config = context.config
  ids = explorer_ids(config.num_clients, config.c_exp, context.seed)
  start_params, weights = None, None
  if chain_guides(config):
    # The chain's start is the seed's θ0 whatever `params0` a caller passes (a control under
    # 'all' holds the chain's end); every report of the reference aliases the last model.
    chain_start, result, seconds = (context.chain() if context.chain is not None
                                    else run_chain(context, params0, rng))
    sqdev = jax.tree.map(lambda d: d[None], exploration.deviation(result.params, chain_start))
    start_params = result.params
  else:
    explore = explore_fn(config, context.apply_fn, context.clients_per_chunk)
    start = time.time()
    data, num_examples = context.pack(ids)
    result = explore(params0, data, jnp.asarray(ids), rng)
    jax.block_until_ready(result.sqdev)
    seconds = time.time() - start
    sqdev = result.sqdev
    weights = num_examples if config.guidance_weighted else None
  reports = server_reports(config, sqdev, rng, context.seed)
  outlier = explorer_outliers(config, reports)  # computed once: the guidance and the log
  guidance = server_guidance(config, reports, weights, rng, outlier)
  up, down = accounting.exploration_bytes(accounting.total_params(params0), len(ids))
  # Per-round guidance needs every client's exploration (explorers == all clients, id order).
  state = reports if config.guidance_per_round else None
  chosen = {}
  if config.dp.exploration_noise > 0:
    chosen['epsilon_exploration'] = privacy.exploration_epsilon(
        float(config.dp.exploration_noise), float(config.dp.delta))
    logging.info('private exploration: noise multiplier %g, clip %g: epsilon %.4g at delta %g',
                 config.dp.exploration_noise, config.dp.exploration_clip,
                 chosen['epsilon_exploration'], config.dp.delta)
    if config.guidance_normalization == 'minmax':
      logging.warning(
          'private exploration with min-max normalised guidance: the noise squeezes small, '
          'informative tensors towards 0 and the global Tp quantile can prune them almost '
          'entirely; guidance_normalization=robust keeps the layers balanced '
          '(docs/robustness.md, "Private exploration and private training at full length")')
  if config.attack.fraction > 0:
    chosen['attackers'] = int(len(attackers(len(ids), config.attack.fraction, context.seed)))
  if outlier is not None:
    chosen['dropped_explorers'] = dropped_explorers(outlier, ids)
    logging.info('filtered_mean dropped the reports of clients %s', chosen['dropped_explorers'])
  if target_of(config):
    tp, figure = choose_tp(guidance, params0, config=config, units=context.units,
                           positions=context.positions)
    tps = (tp,)
    chosen.update({'tp_chosen': tp, target_of(config)[0] + '_reached': figure})
    logging.info('Tp %.6f reaches %s=%s (%.4g)', tp, *target_of(config), figure)
  starts = []
  for tp in tps:
    mask = jax.jit(mask_from_guidance(config, context.units, tp))(guidance)
    info = {**chosen, 'kernel_kept': kernel_kept(mask), 'explorers': int(len(ids)),
            'exploration_epochs_mean': float(jnp.mean(result.epochs_run)),
            'exploration_final_loss_mean': float(jnp.mean(result.final_loss))}
    if config.exploration_chain:
      info['exploration_chain'] = config.exploration_chain
    if config.mask_ramp_rounds:
      # Gradual pruning: round 1 trains the mask of the ramp's first Tp, `update` tightens it;
      # `kernel_kept` above is the final mask's (the controls' target).
      state = {'guidance': guidance, 'tp': jnp.float32(tp)}
      mask = mask_from_guidance(config, context.units,
                                ramp_tp(tp, 1, config.mask_ramp_rounds))(guidance)
    starts.append(Start(mask, state, up, down, seconds, info, start_params))
  return starts


def ramp_tp(tp: float, round_num: int, ramp_rounds: int) -> float:
  """The threshold of round `round_num` under `mask_ramp_rounds` (Zhu & Gupta 2017's cubic
  schedule, rising from near 0 to `tp` at round `ramp_rounds` and staying there)."""
  done = min(round_num, ramp_rounds) / ramp_rounds
  return float(tp * (1.0 - (1.0 - done) ** 3))


def make(config, units) -> Algorithm:
  """AutoFLIP for this config: a fixed mask, or with `guidance_per_round` one per round."""
  if config.mask_ramp_rounds:
    ramp = config.mask_ramp_rounds

    def update(round_num, params, mask, metrics, state):
      del params, mask, metrics
      if round_num >= ramp:
        return None, state  # the mask of rounds `ramp`.. is the final one already
      tp = ramp_tp(float(state['tp']), round_num + 1, ramp)
      return mask_from_guidance(config, units, tp)(state['guidance']), state

    def ramp_like(context, params0):
      return {'guidance': jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params0),
              'tp': jax.ShapeDtypeStruct((), jnp.float32)}

    return Algorithm('autoflip', init, state_like=ramp_like, update=update, sweeps_tp=True)
  if not config.guidance_per_round:
    return Algorithm('autoflip', init, sweeps_tp=True)
  make_mask = mask_from_guidance(config, units, config.tp)

  def round_mask(sqdev_all, client_ids, num_examples):
    sqdev = jax.tree.map(lambda d: d[client_ids], sqdev_all)
    weights = num_examples if config.guidance_weighted else None
    # The reports were attacked, clipped and noised once in `init` (the state holds them).
    return make_mask(exploration.guidance(sqdev, weights, config.guidance_normalization,
                                          config.guidance_aggregation, config.guidance_trim,
                                          config.guidance_filter_z))

  def state_like(context, params0):
    return jax.tree.map(
        lambda p: jax.ShapeDtypeStruct((config.num_clients,) + p.shape, p.dtype), params0)

  return Algorithm('autoflip', init, state_like=state_like, round_mask=round_mask,
                   sweeps_tp=True)
