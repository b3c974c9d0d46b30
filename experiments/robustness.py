"""Robustness and privacy of AutoFLIP's exploration: attack × aggregation, and accuracy against ε.

  python -m experiments.robustness --config=experiments/configs/default.py \
      --workdir=runs/robustness --config.num_rounds=5

Three grids on the config's job (AutoFLIP alone), every point in its own sub-workdir (a rerun
resumes: finished points are read back):

* `attack`: `attack.kind` in --kind (repeatable) × `guidance_aggregation` in --aggregations ×
  `attack.fraction` in --fractions (trimmed mean's `guidance_trim` = --trim).
* `private_exploration`: `dp.exploration_noise` in --exploration_noise (mean aggregation), each
  report clipped to --exploration_clip (0: 1.01 × the largest clean report's norm, so nothing is
  clipped; that choice looks at the data and is not itself private: a deployment fixes the clip
  in advance).
* `private_training`: DP-FedAvg, `dp.noise_multiplier` in --training_noise, updates clipped to
  --training_clip.

The masks' Jaccard index against the clean mask (mean, no attack, no noise) needs only the
exploration: it is run once per invocation and every point's server side (attack, clip, noise,
aggregation, `autoflip.server_reports` / `server_guidance`, with the run's own keys) is applied
to it, so the Jaccard is that of the mask the point's run trains with. Accuracy and compression
come from the runs. Writes `robustness.json` (one row per point: grid, aggregation,
guidance_trim, attack_kind, attack_fraction, exploration_noise, training_noise, jaccard (against
the clean mean's mask), jaccard_same_aggregation (against the same aggregation without the
attack), test_accuracy, compression, epsilon: exploration's or training's, whichever is on;
`diverged` for a run that stopped on a non-finite loss), prints a table and draws
`robustness_jaccard.png` and `accuracy_vs_epsilon.png`.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from autoflip_jax import config_checks, console, exploration, masks, privacy  # noqa: E402
from autoflip_jax import setup as setup_lib  # noqa: E402
from autoflip_jax import train  # noqa: E402
from autoflip_jax.algorithms import autoflip  # noqa: E402
from experiments import overrides as overrides_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one sub-workdir per point.')
_AGGREGATIONS = flags.DEFINE_list('aggregations', ['mean', 'median', 'trimmed_mean'],
                                  'Guidance aggregations of the attack grid.')
_FRACTIONS = flags.DEFINE_list('fractions', ['0', '0.2'], 'Attacking explorer fractions.')
_TRIM = flags.DEFINE_float('trim', None, 'guidance_trim of trimmed_mean (default: the config\'s).')
_KINDS = flags.DEFINE_multi_enum('kind', ['invert'], list(exploration.ATTACKS),
                                 'The attack(s) of the attack grid (repeat the flag for several).')
_EXPLORATION_NOISE = flags.DEFINE_list('exploration_noise', ['1', '4'],
                                       'Noise multipliers of private exploration.')
_EXPLORATION_CLIP = flags.DEFINE_float('exploration_clip', 0.0,
                                       'Clip of the reports (0: just above the largest).')
_TRAINING_NOISE = flags.DEFINE_list('training_noise', ['0.5', '1', '2'],
                                    'Noise multipliers of DP-FedAvg.')
_TRAINING_CLIP = flags.DEFINE_float('training_clip', 1.0, 'Clip of the client updates.')
_JACCARD_ONLY = flags.DEFINE_bool('jaccard_only', False,
                                  'Only the masks (no training runs): seconds, not minutes.')
flags.mark_flags_as_required(['config', 'workdir'])


def points(base, clip: float) -> list[dict]:
  """Every grid point: its name, grid and config overrides."""
  out = []
  for kind in _KINDS.value:
    for agg in _AGGREGATIONS.value:
      for fraction in (float(f) for f in _FRACTIONS.value):
        if fraction == 0 and kind != _KINDS.value[0]:
          continue  # no attack: the same point for every kind
        out.append(dict(name=f'attack_{agg}_{kind}{fraction:g}', grid='attack',
                        overrides={'guidance_aggregation': agg, 'attack.kind': kind,
                                   'attack.fraction': fraction,
                                   'guidance_trim': base.guidance_trim if _TRIM.value is None
                                   else _TRIM.value}))
  for z in (float(v) for v in _EXPLORATION_NOISE.value):
    out.append(dict(name=f'explore_noise{z:g}', grid='private_exploration',
                    overrides={'dp.exploration_clip': clip, 'dp.exploration_noise': z}))
  for z in (float(v) for v in _TRAINING_NOISE.value):
    out.append(dict(name=f'train_clip{_TRAINING_CLIP.value:g}_noise{z:g}',
                    grid='private_training',
                    overrides={'dp.clip': _TRAINING_CLIP.value, 'dp.noise_multiplier': z}))
  return out


def configure(base, overrides: dict):
  return overrides_lib.apply(base, {'algorithm': 'autoflip', **overrides})


def explore(base):
  """The clean exploration of the base job (the one `autoflip.init` runs): (setup, reports)."""
  setup = setup_lib.resolve(base)
  seed = base.seed
  params0 = setup.params0(seed)
  ids = autoflip.explorer_ids(base.num_clients, base.c_exp, seed)
  fn = autoflip.explore_fn(base, setup.apply_fn, setup.clients_per_chunk)
  data, num_examples = setup.pack(ids)
  rng = jax.random.fold_in(jax.random.key(seed), 2)  # the runner's init key (train.start_run)
  return setup, fn(params0, data, jnp.asarray(ids), rng).sqdev, num_examples, rng


def mask_of(config, setup, sqdev, num_examples, rng):
  weights = num_examples if config.guidance_weighted else None
  reports = autoflip.server_reports(config, sqdev, rng, config.seed)
  guidance = autoflip.server_guidance(config, reports, weights, rng)
  return jax.jit(autoflip.mask_from_guidance(config, setup.units, config.tp))(guidance)


def _epsilon(config):
  """The point's ε without its run: exploration's or training's (after all rounds), or None."""
  if config.dp.exploration_noise > 0:
    return privacy.exploration_epsilon(config.dp.exploration_noise, config.dp.delta)
  return train.training_epsilon(config, config.num_rounds)


def plot(rows: list[dict], workdir: str) -> list[str]:
  paths = []
  attack = [r for r in rows if r['grid'] == 'attack']
  if attack:
    fig, ax = plt.subplots(figsize=(6, 4))
    for agg in dict.fromkeys(r['aggregation'] for r in attack):
      for kind in dict.fromkeys(r['attack_kind'] for r in attack):
        pts = sorted((r['attack_fraction'], r['jaccard']) for r in attack
                     if r['aggregation'] == agg and (r['attack_kind'] == kind
                                                     or r['attack_fraction'] == 0))
        ax.plot(*zip(*pts), marker='o', label=f'{agg}, {kind}')
    ax.set_xlabel('fraction of explorers attacking')
    ax.set_ylabel('Jaccard with the clean mask')
    ax.legend()
    paths.append(os.path.join(workdir, 'robustness_jaccard.png'))
    fig.savefig(paths[-1], dpi=120, bbox_inches='tight')
    plt.close(fig)
  curves = {g: sorted((r['epsilon'], r['test_accuracy']) for r in rows
                      if r['grid'] == g and r['epsilon'] is not None
                      and r['test_accuracy'] is not None)
            for g in ('private_exploration', 'private_training')}
  if any(curves.values()):
    fig, ax = plt.subplots(figsize=(6, 4))
    for g, pts in curves.items():
      if pts:
        ax.plot(*zip(*pts), marker='o', label=g.replace('_', ' '))
    clean = [r for r in rows if r['grid'] == 'attack' and r['aggregation'] == 'mean'
             and r['attack_fraction'] == 0 and r['test_accuracy'] is not None]
    if clean:
      ax.axhline(clean[0]['test_accuracy'], color='gray', ls='--', label='clean (no DP)')
    ax.set_xscale('log')
    ax.set_xlabel('ε (δ = config.dp.delta)')
    ax.set_ylabel('test accuracy')
    ax.legend()
    paths.append(os.path.join(workdir, 'accuracy_vs_epsilon.png'))
    fig.savefig(paths[-1], dpi=120, bbox_inches='tight')
    plt.close(fig)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  base = configure(_CONFIG.value, {})
  config_checks.validate_config(base)
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  console.setup_console(workdir)
  setup, sqdev, num_examples, rng = explore(base)
  clip = _EXPLORATION_CLIP.value or 1.01 * float(jnp.max(jax.vmap(exploration.tree_norm)(sqdev)))
  grid = points(base, clip)
  configs = [configure(base, p['overrides']) for p in grid]
  for config in configs:  # every point validated before any runs
    config_checks.validate_config(config)
  clean = mask_of(base, setup, sqdev, num_examples, rng)
  rows = []
  for p, config in zip(grid, configs):
    mask = mask_of(config, setup, sqdev, num_examples, rng)
    jaccard = masks.jaccard(mask, clean)
    # The same aggregation without the attack: what the attack alone moved.
    unattacked = configure(config, {'attack.fraction': 0.0})
    jaccard_same = masks.jaccard(mask, mask_of(unattacked, setup, sqdev, num_examples, rng))
    row = dict(name=p['name'], grid=p['grid'], aggregation=config.guidance_aggregation,
               attack_kind=config.attack.kind, attack_fraction=config.attack.fraction,
               exploration_noise=config.dp.exploration_noise,
               training_noise=config.dp.noise_multiplier, jaccard=jaccard,
               jaccard_same_aggregation=jaccard_same, guidance_trim=config.guidance_trim,
               test_accuracy=None, compression=None, epsilon=None)
    if not _JACCARD_ONLY.value:
      logging.info('robustness point %s', p['name'])
      try:
        [summary] = train.train_and_evaluate(config, os.path.join(workdir, p['name']))
      except FloatingPointError as e:  # a point that diverges is a result, not a crash
        logging.warning('robustness point %s diverged: %s', p['name'], e)
        row.update(diverged=True, epsilon=_epsilon(config))
      else:
        row.update(test_accuracy=summary['test_accuracy'], compression=summary['compression'],
                   epsilon=summary.get('epsilon', summary.get('epsilon_exploration')))
    else:
      row['epsilon'] = _epsilon(config)
    rows.append(row)
  with open(os.path.join(workdir, 'robustness.json'), 'w') as f:
    json.dump({'config': json.loads(json.dumps(base.to_dict(), default=str)),
               'exploration_clip': clip, 'rows': rows}, f, indent=2)
  fmt = lambda v, spec: '-' if v is None else format(v, spec)
  print(f"{'point':28s} {'jaccard':>8s} {'j same agg':>10s} {'accuracy':>9s} "
        f"{'compression':>12s} {'epsilon':>9s}")
  for r in rows:
    print(f"{r['name']:28s} {r['jaccard']:8.4f} {r['jaccard_same_aggregation']:10.4f} "
          f"{fmt(r['test_accuracy'], '9.4f')} "
          f"{fmt(r['compression'], '11.2f')}x {fmt(r['epsilon'], '9.3g')}")
  for path in plot(rows, workdir):
    logging.info('wrote %s', path)


if __name__ == '__main__':
  app.run(main)
