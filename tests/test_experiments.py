"""The experiment scripts beside the sweep: the Pareto over Tp and the robustness grid, each run
as a user runs it (a subprocess on the tiny config)."""

import json
import os
import subprocess
import sys

from tests.test_sweep import ROOT, TINY


def test_pareto_puts_autoflip_and_its_structured_controls_at_equal_flops(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.pareto', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--tp=0.4', '--last=1', '--config.e_exp=1', *TINY], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / 'pareto.json').read_text())
  assert [(r['algorithm'], r['tp']) for r in rows] == [
      ('fedavg', None), ('autoflip', 0.4), ('random', 0.4), ('magnitude', 0.4)]
  flops = {r['algorithm']: r['flops_fraction'] for r in rows}
  assert flops['fedavg'] == 1.0 and flops['autoflip'] < 0.9
  # The controls remove as many units per layer as AutoFLIP: about the same structured FLOPs.
  for control in ('random', 'magnitude'):
    assert abs(flops[control] - flops['autoflip']) < 0.05, flops
  summary = json.loads((tmp_path / 'tp0.4' / 'summary.json').read_text())
  units = {r['algorithm']: r['units'] for r in summary['rows']}
  assert units['random'] == units['magnitude'] == units['autoflip']
  assert os.path.getsize(tmp_path / 'pareto.png') > 10_000
  assert '| autoflip | 0.4 | 1 |' in proc.stdout


def test_robustness_grid_scores_every_mask_against_the_clean_one(tmp_path):
  from autoflip_jax import privacy  # noqa: PLC0415
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.robustness', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--jaccard_only', '--fractions=0.5', '--aggregations=median',
       '--exploration_noise=1', '--training_noise=2', '--config.e_exp=1', *TINY], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / 'robustness.json').read_text())['rows']
  assert [r['grid'] for r in rows] == ['attack', 'private_exploration', 'private_training']
  attacked, private, training = rows
  assert (attacked['aggregation'], attacked['attack_fraction']) == ('median', 0.5)
  assert attacked['update_aggregation'] == 'mean'  # the training updates' aggregation
  # Half the explorers inverting their reports moves the median's mask away from the clean
  # mean's mask and from the unattacked median's.
  assert attacked['jaccard'] < 1.0 and attacked['jaccard_same_aggregation'] < 1.0
  assert private['epsilon'] == privacy.exploration_epsilon(1.0, 1e-5)
  # DP-FedAvg leaves the mask alone (Jaccard 1) and has its own ε.
  assert training['jaccard'] == 1.0 and training['epsilon'] > 0
  assert all(r['test_accuracy'] is None for r in rows)  # --jaccard_only: no training runs


def test_robustness_trains_the_named_points_over_seeds(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.robustness', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--fractions=0,0.5', '--aggregations=filtered_mean',
       '--train_only=attack_filtered_mean_invert0.5', '--exploration_noise=', '--training_noise=',
       '--config.e_exp=1', '--config.seeds=0,1', *TINY], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {r['name']: r for r in json.loads((tmp_path / 'robustness.json').read_text())['rows']}
  clean, attacked = rows['attack_filtered_mean_invert0'], rows['attack_filtered_mean_invert0.5']
  assert clean['test_accuracy'] is None  # not named: its masks only
  assert clean['jaccard_same_aggregation_per_seed'] == [1.0, 1.0]
  # Each seed explores on its own and trains its own run; the row holds both and their mean.
  assert attacked['seeds'] == [0, 1] and len(attacked['jaccard_per_seed']) == 2
  assert attacked['jaccard'] == sum(attacked['jaccard_per_seed']) / 2
  accuracy = attacked['test_accuracy_per_seed']
  assert len(accuracy) == 2 and all(0.0 <= a <= 1.0 for a in accuracy)
  assert abs(attacked['test_accuracy'] - sum(accuracy) / 2) < 1e-9
  assert clean['attackers_per_seed'] == [[], []] and len(attacked['attackers_per_seed'][0]) == 2
  summary = json.loads((tmp_path / 'attack_filtered_mean_invert0.5' / 'summary.json').read_text())
  assert [r['seed'] for r in summary['rows']] == [0, 1]
  # The run records whom the filter left out, as the grid's masks-only pass computed it.
  assert [r['dropped_explorers'] for r in summary['rows']] == attacked['dropped_per_seed']


def test_robustness_label_noise_explores_on_the_noisy_data(tmp_path):
  from autoflip_jax import data as data_lib  # noqa: PLC0415
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.robustness', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--jaccard_only', '--fractions=0', '--aggregations=mean',
       '--label_noise=0.5', '--exploration_noise=', '--training_noise=', '--config.e_exp=1',
       *TINY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / 'robustness.json').read_text())['rows']
  assert [(r['grid'], r['attack_kind'], r['attack_fraction']) for r in rows] == [
      ('attack', 'invert', 0.0), ('label_noise', 'label_noise', 0.5)]
  clean, noisy = rows
  assert clean['jaccard'] == 1.0 and clean['noisy_explorers_per_seed'] is None
  # Half the clients mislabelled: the exploration moves, so does the mask.
  assert noisy['jaccard'] < 1.0 and noisy['jaccard'] == noisy['jaccard_same_aggregation']
  config = json.loads((tmp_path / 'robustness.json').read_text())['config']
  mislabelled = set(data_lib.noisy_clients(config['num_clients'], 0.5, config['seed']))
  assert noisy['noisy_explorers_per_seed'][0]
  assert set(noisy['noisy_explorers_per_seed'][0]) <= mislabelled


def test_unit_activity_ranks_units_against_their_guidance_scores():
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from flax import traverse_util  # noqa: PLC0415
  from autoflip_jax import masks  # noqa: PLC0415
  from autoflip_jax.models.cnn import CNN  # noqa: PLC0415
  from experiments import unit_activity  # noqa: PLC0415
  model = CNN(num_classes=3, channels=(4, 6), hidden=8)
  x = jax.random.uniform(jax.random.key(1), (20, 16, 16, 1))
  params = model.init(jax.random.key(0), x)['params']
  units = model.units()
  _, state = model.apply({'params': params}, x, capture_intermediates=True)
  pre = np.asarray(state['intermediates']['conv1']['__call__'][0]).reshape(-1, 6)
  rate = (pre > 0).mean(0)
  # conv1's unit 2 removed, every other layer whole.
  flat = traverse_util.flatten_dict(masks.ones_mask(params))
  flat[('conv1', 'kernel')] = flat[('conv1', 'kernel')].at[..., 2].set(False)
  mask = traverse_util.unflatten_dict(flat)
  scores = [jnp.arange(4.0), jnp.asarray(rate), jnp.arange(8.0)]
  rows = {r['layer']: r for r in unit_activity.per_unit(units, params, mask, scores,
                                                        state['intermediates'])}
  conv1 = rows['conv1']
  assert (conv1['units'], conv1['kept']) == (6, 5) and rows['conv0']['kept'] == 4
  assert conv1['kept_units'] == [True, True, False, True, True, True]
  assert np.allclose(conv1['scores'], rate) and np.allclose(conv1['active_rate_per_unit'], rate)
  assert np.isclose(conv1['active_rate']['removed'], rate[2])
  assert np.isclose(conv1['active_rate']['kept'], np.delete(rate, 2).mean())
  assert np.isclose(conv1['active_rate']['spearman_score'], 1.0)  # scores ranked as the activity
  scores[1] = -scores[1]
  flipped = unit_activity.per_unit(units, params, mask, scores, state['intermediates'])[1]
  assert np.isclose(flipped['active_rate']['spearman_score'], -1.0)
  assert rows['conv0']['active_rate']['removed'] is None  # nothing removed there
  incoming = (np.asarray(params['conv1']['kernel']) ** 2).reshape(-1, 6).sum(0)
  assert np.isclose(conv1['incoming_sq']['removed'], incoming[2])
  # conv1's outgoing weights: dense0's input rows of channel 2 (HWC flatten: row i is channel i % 6).
  dense = np.asarray(params['dense0']['kernel'])
  assert np.isclose(conv1['outgoing_sq']['removed'], (dense[2::6] ** 2).sum(), rtol=1e-5)


def test_unit_activity_reports_every_seed_and_layer(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.unit_activity', '--config=experiments/configs/default.py',
       f'--workdir={tmp_path}', '--examples=40', '--config.seeds=0,1', *TINY], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads((tmp_path / 'unit_activity.json').read_text())
  assert out['examples'] == 40
  assert [(r['seed'], r['layer']) for r in out['rows']] == [
      (s, layer) for s in (0, 1) for layer in ('conv0', 'conv1', 'dense0')]
  for r in out['rows']:
    assert 0 < r['kept'] < r['units']  # the default Tp removes units in every layer
    assert 0.0 <= r['active_rate']['kept'] <= 1.0 and 0.0 <= r['active_rate']['removed'] <= 1.0
  assert '| 0 | conv1 |' in proc.stdout
  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.unit_activity',
       '--config=experiments/configs/shakespeare_lstm.py', f'--workdir={tmp_path}'], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "unit activity is read where a ReLU" in bad.stderr
