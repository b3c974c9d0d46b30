"""Private training (DP-FedAvg in the jitted round), the accountant, the privacy config checks and
the ε fields of a run."""

from __future__ import annotations

import json
import logging
import os
import shutil

import dp_accounting
from dp_accounting import rdp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import config_checks, federated, local, privacy, report, train
from tests.helpers import tiny_config

DIM, CLASSES, STEPS, BATCH = 60, 40, 1, 8  # 2,400 kernel weights: enough for a std estimate


def _apply(p, x):
  return x @ p['w'] + p['b']


def _params():
  rng = np.random.default_rng(0)
  return {'w': jnp.asarray(rng.normal(size=(DIM, CLASSES)).astype(np.float32) * 0.1),
          'b': jnp.zeros((CLASSES,), jnp.float32)}


def _mask():
  rng = np.random.default_rng(1)
  return {'w': jnp.asarray(rng.random((DIM, CLASSES)) < 0.6), 'b': jnp.ones((CLASSES,), bool)}


def _data(ns):
  rng = np.random.default_rng(2)
  k = len(ns)
  x = rng.normal(size=(k, STEPS, BATCH, DIM)).astype(np.float32)
  y = rng.integers(0, CLASSES, (k, STEPS, BATCH)).astype(np.int32)
  valid = (np.arange(STEPS * BATCH)[None] < np.asarray(ns)[:, None]).reshape(k, STEPS, BATCH)
  return local.ClientData(jnp.asarray(x), jnp.asarray(y), jnp.asarray(valid))


def _round(ns, **dp):
  fn = federated.make_round_fn(_apply, optimizer='sgd', local_epochs=1, **dp)
  state = federated.ServerState(_params(), _mask(), jnp.int32(3))
  ns = np.asarray(ns, np.int32)
  out, _ = fn(state, _data(ns), jnp.asarray(ns), jnp.arange(len(ns), dtype=jnp.int32),
              jax.random.key(7), jnp.float32(0.5), None)
  return jax.tree.map(np.asarray, out.params)


def test_default_round_is_bit_identical_to_the_round_without_dp_arguments():
  plain = _round([8, 5, 3, 8])
  zero = _round([8, 5, 3, 8], dp_clip=0.0, dp_noise=0.0)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(zero)):
    np.testing.assert_array_equal(a, b)


def test_unclipped_dp_round_is_the_uniform_mean():
  # Equal example counts: FedAvg's example weights are uniform, so a clip nobody reaches and no
  # noise give FedAvg's round (up to rounding: θ_t + mean Δ_k vs mean θ_k).
  plain = _round([8, 8, 8, 8])
  private = _round([8, 8, 8, 8], dp_clip=1e9)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(private)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_clipped_round_moves_the_model_at_most_the_clip():
  before = jax.tree.map(np.asarray, federated_masked(_params(), _mask()))
  after = _round([8, 5, 3, 8], dp_clip=0.01)
  step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(after),
                                                           jax.tree.leaves(before))))
  assert 0.0 < step <= 0.01 + 1e-6


def federated_masked(params, mask):
  return jax.tree.map(lambda p, m: jnp.where(m, p, 0), params, mask)


def test_noise_only_on_kept_coordinates_with_the_right_std():
  clip, z, ns = 0.5, 2.0, [8, 5, 3, 8]
  quiet = _round(ns, dp_clip=clip)
  noisy = _round(ns, dp_clip=clip, dp_noise=z)
  mask = jax.tree.map(np.asarray, _mask())
  for q, n, m in zip(jax.tree.leaves(quiet), jax.tree.leaves(noisy), jax.tree.leaves(mask)):
    assert np.all(n[~m] == 0.0)  # pruned coordinates exactly 0
  diff = noisy['w'][mask['w']] - quiet['w'][mask['w']]
  # The noise is N(0, (z C)²) on the sum, divided by the cohort of 4.
  assert diff.size > 1000
  np.testing.assert_allclose(np.std(diff), z * clip / len(ns), rtol=0.1)
  assert abs(np.mean(diff)) < 0.1 * z * clip / len(ns)


def test_noise_depends_on_the_round():
  ns = np.asarray([8, 5, 3, 8], np.int32)
  fn = federated.make_round_fn(_apply, optimizer='sgd', local_epochs=1, dp_clip=0.5,
                               dp_noise=1.0)
  outs = []
  for r in (1, 2):
    state = federated.ServerState(_params(), _mask(), jnp.int32(r))
    out, _ = fn(state, _data(ns), jnp.asarray(ns), jnp.arange(4, dtype=jnp.int32),
                jax.random.key(7), jnp.float32(0.5), None)
    outs.append(np.asarray(out.params['w']))
  assert not np.array_equal(outs[0], outs[1])


# --- accountant --------------------------------------------------------------------------------

def test_epsilon_matches_dp_accounting_directly():
  acc = rdp.RdpAccountant(orders=list(privacy.ORDERS))
  acc.compose(dp_accounting.GaussianDpEvent(1.5))
  assert privacy.exploration_epsilon(1.5, 1e-5) == pytest.approx(acc.get_epsilon(1e-5))
  acc = rdp.RdpAccountant(orders=list(privacy.ORDERS))
  acc.compose(dp_accounting.PoissonSampledDpEvent(0.25, dp_accounting.GaussianDpEvent(1.0)), 30)
  assert privacy.training_epsilon(1.0, 0.25, 30, 1e-5) == pytest.approx(acc.get_epsilon(1e-5))


def test_epsilon_falls_with_noise_and_grows_with_rounds():
  explore = [privacy.exploration_epsilon(z, 1e-5) for z in (0.5, 1.0, 2.0, 4.0)]
  assert all(a > b for a, b in zip(explore, explore[1:]))
  train_eps = [privacy.training_epsilon(z, 0.25, 20, 1e-5) for z in (0.8, 1.0, 2.0)]
  assert all(a > b for a, b in zip(train_eps, train_eps[1:]))
  rounds = [privacy.training_epsilon(1.0, 0.25, r, 1e-5) for r in (1, 5, 20)]
  assert all(a < b for a, b in zip(rounds, rounds[1:]))


def test_accountant_logs_no_convergence_warnings(caplog):
  privacy.training_epsilon.cache_clear()
  with caplog.at_level('WARNING'):
    privacy.training_epsilon(1.0, 0.25, 3, 1e-5)
  assert not [r for r in caplog.records if 'converge' in r.getMessage()]


# --- config checks -----------------------------------------------------------------------------

@pytest.mark.parametrize('overrides, message', [
    ({'dp.noise_multiplier': -1.0}, r'config\.dp\.noise_multiplier=-1\.0 must be'),
    ({'dp.clip': -0.1}, r'config\.dp\.clip=-0\.1 must be'),
    ({'dp.noise_multiplier': 1.0}, r'config\.dp\.noise_multiplier=1\.0 needs config\.dp\.clip'),
    ({'dp.delta': 1.0}, r'config\.dp\.delta=1\.0 must be a number in \(0\.0, 1\.0\)'),
    ({'dp.delta': 0.0}, r'config\.dp\.delta=0\.0 must be'),
    ({'dp.exploration_noise': -2.0}, r'config\.dp\.exploration_noise=-2\.0'),
    ({'dp.exploration_noise': 1.0}, r'config\.dp\.exploration_noise=1\.0 needs '
                                    r'config\.dp\.exploration_clip'),
    ({'dp.exploration_noise': 1.0, 'dp.exploration_clip': 1.0,
      'guidance_aggregation': 'median'}, r'config\.guidance_aggregation=.median.'),
    ({'guidance_trim': 0.5}, r'config\.guidance_trim=0\.5 must be a number in \[0\.0, 0\.5\)'),
    ({'guidance_filter_z': 0.0}, r'config\.guidance_filter_z=0\.0 must be a number in \(0\.0, '),
    ({'dp.exploration_noise': 1.0, 'dp.exploration_clip': 1.0,
      'guidance_aggregation': 'filtered_mean'}, r'config\.guidance_aggregation=.filtered_mean.'),
    ({'guidance_aggregation': 'mode'}, r'config\.guidance_aggregation=.mode. is not one of'),
    ({'attack.fraction': 1.0}, r'config\.attack\.fraction=1\.0 must be a number in '
                               r'\[0\.0, 1\.0\)'),
    ({'attack.fraction': -0.1}, r'config\.attack\.fraction=-0\.1'),
    ({'attack.kind': 'flip'}, r'config\.attack\.kind=.flip. is not one of'),
    ({'data.label_noise': 1.5}, r'config\.data\.label_noise=1\.5 must be'),
    ({'guidance_weighted': True, 'guidance_aggregation': 'median'},
     r'config\.guidance_weighted=True with config\.guidance_aggregation'),
])
def test_bad_privacy_and_robustness_fields_are_named(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_checks.validate_config(tiny_config(**overrides))


def test_defaults_validate():
  config_checks.validate_config(tiny_config())


# --- a private run -----------------------------------------------------------------------------

def test_private_run_reports_epsilon_and_resumes_bit_identically(tmp_path, caplog):
  config = tiny_config(**{'algorithm': 'autoflip', 'num_rounds': 2, 'dp.clip': 1.0,
                          'dp.noise_multiplier': 1.0, 'dp.exploration_clip': 1.0,
                          'dp.exploration_noise': 2.0, 'checkpoint_every': 1})
  with caplog.at_level(logging.WARNING):
    rows = train.train_and_evaluate(config, str(tmp_path))
  # Min-max guidance under exploration noise collapses small tensors: the run says so.
  assert 'guidance_normalization=robust' in caplog.text
  # Lose round 2's checkpoint and the run's end: the rerun redoes round 2 from round 1's
  # checkpoint, with the same noise (its key follows the round), to the same rows.
  copy = tmp_path / 'copy'
  shutil.copytree(tmp_path, copy, ignore=shutil.ignore_patterns('copy'))
  os.remove(copy / 'progress.json')
  shutil.rmtree(copy / 'checkpoints' / 'autoflip' / '2')
  strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != 'round_seconds'}
                        for line in open(path)]
  assert train.train_and_evaluate(config, str(copy)) == rows
  assert strip(copy / 'metrics.jsonl') == strip(tmp_path / 'metrics.jsonl')
  q = config.clients_per_round / config.num_clients
  with open(tmp_path / 'metrics.jsonl') as f:
    metrics = [json.loads(line) for line in f]
  eps = [r['epsilon'] for r in metrics if r['round'] > 0]
  assert eps == [pytest.approx(privacy.training_epsilon(1.0, q, r, 1e-5)) for r in (1, 2)]
  assert rows[0]['epsilon'] == pytest.approx(eps[-1])
  assert rows[0]['epsilon_exploration'] == pytest.approx(privacy.exploration_epsilon(2.0, 1e-5))
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['rows'][0]['epsilon_exploration'] == rows[0]['epsilon_exploration']
  table = report.table(rows)
  assert 'ε exploration' in table and 'ε training' in table
  assert train.training_epsilon(tiny_config(), 5) is None


def test_default_table_has_no_epsilon_column():
  row = {'algorithm': 'fedavg', 'seed': 0, 'test_accuracy': 0.5, 'kept_params': 1,
         'total_params': 1, 'compression': 1.0, 'flops_per_example': 1, 'flops_structured': 1,
         'flops_dense': 1, 'bytes_up_total': 1, 'bytes_down_total': 1}
  assert 'ε' not in report.table([row])
