"""Robustness and privacy of AutoFLIP's exploration: attack × aggregation, and accuracy against ε.

  python -m experiments.robustness --config=experiments/configs/default.py \
      --workdir=runs/robustness --config.num_rounds=5

Four grids on the config's job (AutoFLIP alone), every point in its own sub-workdir (a rerun
resumes: finished points are read back):

* `attack`: `attack.kind` in --kind (repeatable) × `guidance_aggregation` in --aggregations ×
  `attack.fraction` in --fractions (trimmed mean's `guidance_trim` = --trim); the median and
  trimmed mean once per `guidance_bucket` in --buckets (points named `median_b2` etc.).
* `label_noise`: `data.label_noise` in --label_noise × `guidance_aggregation` in --aggregations:
  that fraction of the clients train and explore on permuted labels (empty by default). Each
  level explores again on its noisy data; the row's attack_kind is 'label_noise', its
  attack_fraction the level, `noisy_explorers_per_seed` the mislabelled explorers, and its
  jaccard_same_aggregation compares with the same aggregation on clean data.
* `private_exploration`: `dp.exploration_noise` in --exploration_noise (mean aggregation), each
  report clipped to --exploration_clip (0: 1.01 × the largest clean report's norm, so nothing is
  clipped; that choice looks at the data and is not itself private: a deployment fixes the clip
  in advance).
* `private_training`: DP-FedAvg, `dp.noise_multiplier` in --training_noise, updates clipped to
  --training_clip.

With `--config.seeds=0,1,2` every point trains those seeds side by side (own θ0, explorers,
attackers, cohorts) and its row holds the mean and std over seeds; `--train_only` names the
points that train (the rest get their masks only).

The masks' Jaccard index against the clean mask (mean, no attack, no noise) needs only the
exploration: it is run once per seed and every point's server side (attack, clip, noise,
aggregation, `autoflip.server_reports` / `server_guidance`, with the run's own keys) is applied
to it, so the Jaccard is that of the mask the point's run trains with. Accuracy and compression
come from the runs. Writes `robustness.json` (one row per point: grid, aggregation,
guidance_trim, guidance_bucket, attack_kind, attack_fraction, exploration_noise,
training_noise, jaccard (against the clean mean's mask), jaccard_same_aggregation (against
the same aggregation without the attack); both the mean over seeds, per seed in
`*_per_seed`), test_accuracy (the final round's, mean over seeds; `test_accuracy_std`,
`test_accuracy_per_seed`), compression, epsilon: exploration's or training's, whichever is on;
`attackers_per_seed` and, for `filtered_mean`, `dropped_per_seed`: the client ids of the
attacking explorers and of those whose reports the filter left out; `diverged` for a run that
stopped on a non-finite loss), prints a table and draws
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
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from autoflip_jax import config_checks, console, exploration, masks, privacy  # noqa: E402
from autoflip_jax import data as data_lib  # noqa: E402
from autoflip_jax import setup as setup_lib  # noqa: E402
from autoflip_jax import train  # noqa: E402
from autoflip_jax.algorithms import autoflip  # noqa: E402
from experiments.explorations import configure, explore, mask_and_outliers, mask_of  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory holding one sub-workdir per point.')
_AGGREGATIONS = flags.DEFINE_list('aggregations',
                                  ['mean', 'median', 'trimmed_mean', 'filtered_mean'],
                                  'Guidance aggregations of the attack grid.')
_FRACTIONS = flags.DEFINE_list('fractions', ['0', '0.2'], 'Attacking explorer fractions.')
_TRIM = flags.DEFINE_float('trim', None, 'guidance_trim of trimmed_mean (default: the config\'s).')
_BUCKETS = flags.DEFINE_list('buckets', ['1'],
                             'guidance_bucket values for median and trimmed_mean (1: none; '
                             'e.g. 1,2: each robust aggregation with and without bucketing).')
_KINDS = flags.DEFINE_multi_enum('kind', ['invert'], list(exploration.ATTACKS),
                                 'The attack(s) of the attack grid (repeat the flag for several).')
_LABEL_NOISE = flags.DEFINE_list('label_noise', [],
                                 'Fractions of the clients with permuted labels '
                                 '(data.label_noise), each × --aggregations.')
_EXPLORATION_NOISE = flags.DEFINE_list('exploration_noise', ['1', '4'],
                                       'Noise multipliers of private exploration.')
_EXPLORATION_CLIP = flags.DEFINE_float('exploration_clip', 0.0,
                                       'Clip of the reports (0: just above the largest).')
_TRAINING_NOISE = flags.DEFINE_list('training_noise', ['0.5', '1', '2'],
                                    'Noise multipliers of DP-FedAvg.')
_TRAINING_CLIP = flags.DEFINE_float('training_clip', 1.0, 'Clip of the client updates.')
_TRAIN_ONLY = flags.DEFINE_list('train_only', [],
                                'Names of the points that train (the rest: masks only); empty: '
                                'every point (unless --jaccard_only).')
_JACCARD_ONLY = flags.DEFINE_bool('jaccard_only', False,
                                  'Only the masks (no training runs): seconds, not minutes.')
flags.mark_flags_as_required(['config', 'workdir'])


def points(base, clip: float) -> list[dict]:
  """Every grid point: its name, grid and config overrides."""
  out = []
  trim = base.guidance_trim if _TRIM.value is None else _TRIM.value
  # (aggregation, bucket, its name in the points' names)
  aggregations = [(agg, b, agg if b == 1 else f'{agg}_b{b}') for agg in _AGGREGATIONS.value
                  for b in sorted({int(v) for v in _BUCKETS.value})
                  if b == 1 or agg in ('median', 'trimmed_mean')]
  for kind in _KINDS.value:
    for agg, bucket, label in aggregations:
      for fraction in (float(f) for f in _FRACTIONS.value):
        if fraction == 0 and kind != _KINDS.value[0]:
          continue  # no attack: the same point for every kind
        out.append(dict(name=f'attack_{label}_{kind}{fraction:g}', grid='attack',
                        overrides={'guidance_aggregation': agg, 'attack.kind': kind,
                                   'attack.fraction': fraction, 'guidance_trim': trim,
                                   'guidance_bucket': bucket}))
  for fraction in (float(f) for f in _LABEL_NOISE.value):
    if fraction == 0:
      continue  # clean data: the attack grid's unattacked points
    for agg, bucket, label in aggregations:
      out.append(dict(name=f'labels_{label}{fraction:g}', grid='label_noise',
                      overrides={'guidance_aggregation': agg, 'data.label_noise': fraction,
                                 'guidance_trim': trim, 'guidance_bucket': bucket}))
  for z in (float(v) for v in _EXPLORATION_NOISE.value):
    out.append(dict(name=f'explore_noise{z:g}', grid='private_exploration',
                    overrides={'dp.exploration_clip': clip, 'dp.exploration_noise': z}))
  for z in (float(v) for v in _TRAINING_NOISE.value):
    out.append(dict(name=f'train_clip{_TRAINING_CLIP.value:g}_noise{z:g}',
                    grid='private_training',
                    overrides={'dp.clip': _TRAINING_CLIP.value, 'dp.noise_multiplier': z}))
  return out


def _epsilon(config):
  """The point's ε without its run: exploration's or training's (after all rounds), or None."""
  if config.dp.exploration_noise > 0:
    return privacy.exploration_epsilon(config.dp.exploration_noise, config.dp.delta)
  return train.training_epsilon(config, config.num_rounds)


def plot(rows: list[dict], workdir: str) -> list[str]:
  paths = []
  attack = [r for r in rows if r['grid'] in ('attack', 'label_noise')]
  if attack:
    fig, ax = plt.subplots(figsize=(6, 4))
    aggregation = lambda r: (r['aggregation'], r.get('guidance_bucket', 1))
    for agg in dict.fromkeys(aggregation(r) for r in attack):
      for kind in dict.fromkeys(r['attack_kind'] for r in attack):
        pts = sorted((r['attack_fraction'], r['jaccard']) for r in attack
                     if aggregation(r) == agg and (r['attack_kind'] == kind
                                                   or r['attack_fraction'] == 0))
        name = agg[0] if agg[1] == 1 else f'{agg[0]} (buckets of {agg[1]})'
        ax.plot(*zip(*pts), marker='o', label=f'{name}, {kind}')
    ax.set_xlabel('fraction of explorers attacking (label_noise: of clients mislabelled)')
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
  setup = setup_lib.resolve(base)
  explorations = [explore(base, setup, seed) for seed in setup.seeds]
  clip = _EXPLORATION_CLIP.value or 1.01 * max(
      float(jnp.max(jax.vmap(exploration.tree_norm)(e.sqdev))) for e in explorations)
  grid = points(base, clip)
  # Label noise changes the data, so those points explore again, once per noise level.
  noisy = {}  # label_noise -> (setup, explorations)
  for p in grid:
    fraction = p['overrides'].get('data.label_noise')
    if fraction is not None and fraction not in noisy:
      noisy_config = configure(base, {'data.label_noise': fraction})
      config_checks.validate_config(noisy_config)
      noisy_setup = setup_lib.resolve(noisy_config)
      noisy[fraction] = noisy_setup, [explore(noisy_config, noisy_setup, seed)
                                      for seed in noisy_setup.seeds]
  unknown = sorted(set(_TRAIN_ONLY.value) - {p['name'] for p in grid})
  if unknown:
    raise app.UsageError(f'--train_only names no point of the grid: {unknown}; the points: '
                         f'{[p["name"] for p in grid]}')
  configs = [configure(base, p['overrides']) for p in grid]
  for config in configs:  # every point validated before any runs
    config_checks.validate_config(config)
  clean = [mask_of(base, setup, e) for e in explorations]
  # Each aggregation's mask on the clean reports, computed once however many points share it
  # (every attack kind and fraction, every label-noise level; a median sorts all reports).
  unattacked_masks = {}
  rows = []
  for p, config in zip(grid, configs):
    # Against the clean mean's mask, and against the same aggregation without the attack (what
    # the attack alone moved), seed by seed.
    unattacked = configure(config, {'attack.fraction': 0.0, 'data.label_noise': 0.0})
    label_noise = config.data.label_noise
    point_setup, point_explorations = noisy.get(label_noise, (setup, explorations))
    mislabelled = data_lib.noisy_clients(config.num_clients, label_noise, config.seed)
    jaccards, same, dropped, attacking, noisy_explorers = [], [], [], [], []
    for e, e_clean, clean_mask in zip(point_explorations, explorations, clean):
      mask, outlier = mask_and_outliers(config, point_setup, e)
      jaccards.append(masks.jaccard(mask, clean_mask))
      key = (unattacked.to_json(), e_clean.seed)
      if key not in unattacked_masks:
        unattacked_masks[key] = mask_of(unattacked, setup, e_clean)
      same.append(masks.jaccard(mask, unattacked_masks[key]))
      ids = autoflip.explorer_ids(config.num_clients, config.c_exp, e.seed)
      bad = autoflip.attackers(len(ids), config.attack.fraction, e.seed)
      attacking.append(sorted(int(ids[i]) for i in bad))
      noisy_explorers.append(sorted(int(i) for i in ids if int(i) in mislabelled))
      if outlier is not None:
        dropped.append(autoflip.dropped_explorers(outlier, ids))
    row = dict(name=p['name'], grid=p['grid'], aggregation=config.guidance_aggregation,
               # a label-noise point's threat is its mislabelled clients, not an attack
               attack_kind='label_noise' if label_noise else config.attack.kind,
               attack_fraction=label_noise or config.attack.fraction, label_noise=label_noise,
               noisy_explorers_per_seed=noisy_explorers if label_noise else None,
               exploration_noise=config.dp.exploration_noise,
               training_noise=config.dp.noise_multiplier, seeds=list(setup.seeds),
               jaccard=float(np.mean(jaccards)), jaccard_per_seed=jaccards,
               jaccard_same_aggregation=float(np.mean(same)),
               jaccard_same_aggregation_per_seed=same, guidance_trim=config.guidance_trim,
               guidance_bucket=config.guidance_bucket,
               attackers_per_seed=attacking, dropped_per_seed=dropped or None,
               # the server's aggregation of the training updates (--config.update_aggregation)
               update_aggregation=config.update_aggregation,
               test_accuracy=None, compression=None, epsilon=None)
    trains = not _JACCARD_ONLY.value and (not _TRAIN_ONLY.value or p['name'] in _TRAIN_ONLY.value)
    if trains:
      logging.info('robustness point %s', p['name'])
      try:
        summaries = train.train_and_evaluate(config, os.path.join(workdir, p['name']))
      except FloatingPointError as e:  # a point that diverges is a result, not a crash
        logging.warning('robustness point %s diverged: %s', p['name'], e)
        row.update(diverged=True, epsilon=_epsilon(config))
      else:
        accuracy = [s['test_accuracy'] for s in summaries]
        row.update(test_accuracy=float(np.mean(accuracy)),
                   # the sample std, as the run's table and report.seed_summary give it
                   test_accuracy_std=float(np.std(accuracy, ddof=1)) if len(accuracy) > 1
                   else 0.0, test_accuracy_per_seed=accuracy,
                   compression=float(np.mean([s['compression'] for s in summaries])),
                   epsilon=summaries[0].get('epsilon',
                                            summaries[0].get('epsilon_exploration')))
    else:
      row['epsilon'] = _epsilon(config)
    rows.append(row)
  with open(os.path.join(workdir, 'robustness.json'), 'w') as f:
    json.dump({'config': json.loads(json.dumps(base.to_dict(), default=str)),
               'exploration_clip': clip, 'rows': rows}, f, indent=2)
  fmt = lambda v, spec: '-' if v is None else format(v, spec)
  print(f"{'point':28s} {'jaccard':>8s} {'j same agg':>10s} {'accuracy':>9s} {'± std':>7s} "
        f"{'compression':>12s} {'epsilon':>9s}   (means over seeds {list(setup.seeds)})")
  for r in rows:
    print(f"{r['name']:28s} {r['jaccard']:8.4f} {r['jaccard_same_aggregation']:10.4f} "
          f"{fmt(r['test_accuracy'], '9.4f')} {fmt(r.get('test_accuracy_std'), '7.4f')} "
          f"{fmt(r['compression'], '11.2f')}x {fmt(r['epsilon'], '9.3g')}")
  for path in plot(rows, workdir):
    logging.info('wrote %s', path)


if __name__ == '__main__':
  app.run(main)
