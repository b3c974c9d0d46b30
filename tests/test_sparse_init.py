"""`config.sparse_init='fan_in'`: θ0's kept kernel columns rescaled by sqrt(fan-in / kept)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import masks, train
from autoflip_jax import setup as setup_lib
from autoflip_jax.config_checks import validate_config
from tests.helpers import tiny_config


def test_each_column_is_scaled_by_its_kept_fan_in():
  params = {'conv': {'kernel': jnp.ones((2, 2, 3, 4)), 'bias': jnp.ones((4,))},
            'embed': {'embedding': jnp.ones((5, 3))}}
  kernel_mask = np.ones((2, 2, 3, 4), bool)
  kernel_mask[..., 1] = False                 # column 1 keeps nothing
  kernel_mask[:, :, :2, 2] = False            # column 2 keeps 4 of 12 inputs
  kernel_mask[0, 0, 0, 3] = False             # column 3 keeps 11 of 12
  mask = {'conv': {'kernel': jnp.asarray(kernel_mask), 'bias': jnp.ones((4,), bool)},
          'embed': {'embedding': jnp.zeros((5, 3), bool)}}
  out = masks.rescale_fan_in(params, mask)
  factors = np.asarray(out['conv']['kernel'])[0, 1, 2]  # one entry of every column
  np.testing.assert_allclose(factors, [1.0, 1.0, np.sqrt(12 / 4), np.sqrt(12 / 11)], rtol=1e-6)
  assert np.asarray(out['conv']['kernel'])[..., 0].tolist() == np.ones((2, 2, 3)).tolist()
  np.testing.assert_array_equal(out['conv']['bias'], params['conv']['bias'])
  np.testing.assert_array_equal(out['embed']['embedding'], params['embed']['embedding'])


def test_all_kept_mask_returns_theta0_bit_for_bit():
  params = setup_lib.resolve(tiny_config()).params0(0)
  out = masks.rescale_fan_in(params, masks.ones_mask(params))
  jax.tree.map(np.testing.assert_array_equal, out, params)


def test_run_starts_from_the_rescaled_theta0_and_leaves_fedavg_alone(tmp_path, monkeypatch):
  seen = []
  original = setup_lib.Setup.server_state

  def record(self, params, round_masks=None):
    if round_masks is not None:
      seen.append((params, round_masks))
    return original(self, params, round_masks)

  monkeypatch.setattr(setup_lib.Setup, 'server_state', record)
  rows, first = {}, []
  for mode in ('', 'fan_in'):
    seen.clear()
    config = tiny_config(algorithm='autoflip,fedavg', num_rounds=1, sparse_init=mode,
                         **{'data.max_test_examples': 200})
    workdir = str(tmp_path / (mode or 'off'))
    train.train_and_evaluate(config, workdir)
    rows[mode] = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
    first.append(list(seen))  # round 0's state (start_run) of each algorithm, in order
  (plain, _), _ = first[0]
  (scaled, masks_on), (fedavg, _) = first[1]
  p0 = setup_lib.resolve(tiny_config()).params0(0)
  autoflip_mask = masks_on[0]
  assert not all(bool(jnp.all(m)) for m in jax.tree.leaves(autoflip_mask))  # it prunes
  jax.tree.map(np.testing.assert_array_equal, plain[0], p0)
  jax.tree.map(np.testing.assert_allclose, scaled[0], masks.rescale_fan_in(p0, autoflip_mask))
  jax.tree.map(np.testing.assert_array_equal, fedavg[0], p0)  # FedAvg: the dense θ0 itself
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(scaled[0]),
                                                      jax.tree.leaves(p0)))
  drop = lambda rs, algo: [{k: v for k, v in r.items() if k != 'round_seconds'}
                           for r in rs if r['algorithm'] == algo]
  assert drop(rows['fan_in'], 'fedavg') == drop(rows[''], 'fedavg')
  assert drop(rows['fan_in'], 'autoflip') != drop(rows[''], 'autoflip')


@pytest.mark.parametrize('value', ['he', 'fan_out', None])
def test_unknown_sparse_init_is_named(value):
  with pytest.raises(ValueError, match='config.sparse_init='):
    validate_config(tiny_config(sparse_init=value))
