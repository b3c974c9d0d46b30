"""Which units AutoFLIP's mask removes, by what they do at the start: activity against guidance.

  python -m experiments.unit_activity --config=experiments/configs/mnist_paper.py \
      --workdir=runs/unit_activity --config.e_exp=30 --config.seeds=0,1,2

For every training seed: the run's exploration of its start model (θ0, or the chain's end with
`exploration_chain='start'`), the server's guidance and the hybrid mask exactly as an `autoflip`
run builds them (`experiments.explorations`), then, on a sample of
the clients' training examples (`--examples`, every client's in turn), each unit's activity at
the start model: the share of its pre-activation outputs (every example and position) above 0,
`active_rate`, and the mean of their positive part, `mean_activation`. Per unit layer it reports
the kept and removed units' means and the Spearman rank correlation of the units' guidance scores
(`masks.unit_scores`, what the `layer` and `global` rules cut on) with each: positive means the
mask removes the least active units, negative the most active. Also the units' incoming and
outgoing squared θ0 norms, the same way.

Activity is read from the output of the module named as the unit (`capture_intermediates`), so
it means "ReLU activity" where a ReLU follows that module directly: the paper CNN (`cnn`). Other
models are refused with a message.

Writes `unit_activity.json` (one row per seed and unit layer, with the per-unit `scores`,
`kept_units` and `active_rate_per_unit`, so that two runs' rankings can be compared unit by unit)
and prints a table.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from ml_collections import config_flags
from scipy import stats

from autoflip_jax import config_checks, console, masks
from autoflip_jax import setup as setup_lib
from autoflip_jax.algorithms import autoflip
from experiments import explorations

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where unit_activity.json goes.')
_EXAMPLES = flags.DEFINE_integer('examples', 1000, 'Training examples the activity is read on.')
flags.mark_flags_as_required(['config', 'workdir'])

MODELS = ('cnn',)
MEASURES = ('active_rate', 'mean_activation', 'incoming_sq', 'outgoing_sq')


def sample(dataset, count: int) -> np.ndarray:
  """`count` training examples, evenly spaced over all clients' data in client order."""
  x = np.concatenate(dataset.client_x)
  return x[np.linspace(0, len(x) - 1, min(count, len(x))).astype(int)]


def per_unit(units, params, mask, scores, intermediates) -> list[dict]:
  """One row per unit layer: kept count, and per measure kept / removed means and Spearman."""
  flat_p = traverse_util.flatten_dict(params)
  flat_m = traverse_util.flatten_dict(mask)
  out = traverse_util.flatten_dict(intermediates)
  rows = []
  for unit, score in zip(units, scores):
    n = flat_p[unit.kernel].shape[-1] // unit.groups
    keep = unit.alive({k: np.asarray(v) for k, v in flat_m.items()}, extras=False)
    pre = np.asarray(out[(unit.name, '__call__')][0]).reshape(-1, n)
    incoming = sum(np.sum(np.asarray(flat_p[p]).reshape(-1, unit.groups, n) ** 2, axis=(0, 1))
                   for p in unit.kernels)
    outgoing = np.zeros(n)
    for path, axis in unit.consumers:
      c = np.moveaxis(np.asarray(flat_p[path]), axis, 0)
      outgoing += np.sum(c.reshape(-1, n, *c.shape[1:]) ** 2,
                         axis=tuple(a for a in range(c.ndim + 1) if a != 1))
    values = dict(active_rate=(pre > 0).mean(0), mean_activation=np.maximum(pre, 0).mean(0),
                  incoming_sq=incoming, outgoing_sq=outgoing)
    score = np.asarray(score)
    row = dict(layer=unit.name, units=int(n), kept=int(keep.sum()),
               scores=[float(v) for v in score], kept_units=[bool(k) for k in keep],
               active_rate_per_unit=[float(v) for v in values['active_rate']])
    for name, v in values.items():
      removed = v[~keep]
      row[name] = dict(kept=float(v[keep].mean()),
                       removed=float(removed.mean()) if removed.size else None,
                       spearman_score=float(stats.spearmanr(score, v)[0]))
    rows.append(row)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = explorations.configure(_CONFIG.value, {})
  config_checks.validate_config(config)
  if config.exploration_chain in autoflip.CHAIN_GUIDES:
    raise app.UsageError(f'--config.exploration_chain={config.exploration_chain!r}: the guidance '
                         f'is then the chain\'s one report; this reads the paper\'s explorers '
                         f'(exploration_chain \'\' or \'start\')')
  if config.model not in MODELS:
    raise app.UsageError(f'--config.model={config.model!r}: unit activity is read where a ReLU '
                         f'follows the unit\'s module directly, models {MODELS}')
  if _EXAMPLES.value < 2:
    raise app.UsageError(f'--examples={_EXAMPLES.value} must be at least 2')
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  console.setup_console(workdir)
  setup = setup_lib.resolve(config)
  x = jnp.asarray(sample(setup.dataset, _EXAMPLES.value))
  rows = []
  for seed in setup.seeds:
    start = setup.start_params(seed)
    e = explorations.explore(config, setup, seed, start)
    mask, _ = explorations.mask_and_outliers(config, setup, e)
    guidance, _ = explorations.guidance_and_outliers(config, e)
    scores = masks.unit_scores(guidance, setup.units)
    _, state = setup.model.apply({'params': start}, x, capture_intermediates=True)
    for row in per_unit(setup.units, start, mask, scores, state['intermediates']):
      rows.append(dict(seed=seed, **row))
      logging.info('seed %d %s: %s', seed, row['layer'],
                   {k: v for k, v in row.items() if k in MEASURES})
  with open(os.path.join(workdir, 'unit_activity.json'), 'w') as f:
    json.dump(dict(config=json.loads(config.to_json()), examples=int(x.shape[0]), rows=rows), f,
              indent=1)
  print('| seed | layer | kept/units | ' + ' | '.join(
      f'{m}: kept / removed / ρ(score)' for m in MEASURES) + ' |')
  print('|---|---|---|' + '---|' * len(MEASURES))
  fmt = lambda v: '-' if v is None else f'{v:.3g}'  # noqa: E731
  for r in rows:
    print(f'| {r["seed"]} | {r["layer"]} | {r["kept"]}/{r["units"]} | ' + ' | '.join(
        f'{fmt(r[m]["kept"])} / {fmt(r[m]["removed"])} / {r[m]["spearman_score"]:+.2f}'
        for m in MEASURES) + ' |')


if __name__ == '__main__':
  app.run(main)
