"""Variants side by side in one program (Tp thresholds, seeds): each equals its own run."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import checkpoint, federated, local, masks, models, report, train
from autoflip_jax.models import layers
from tests.helpers import tiny_config

# 100 examples a client (one local step an epoch), 200 test examples: the runs are compile-bound.
# Checkpoints after rounds 0, 2 and 3 (the last); the resume test drops the last.
SMALL = {'data.max_examples_per_client': 100, 'data.max_test_examples': 200, 'num_rounds': 3,
         'checkpoint_every': 2}
SWEEP = dict(SMALL, algorithm='autoflip,fedavg', tp_sweep='0.1,0.3', seeds='0,1')
NAMES = ['autoflip_tp0.1', 'autoflip_tp0.3']
FLOATS = ('test_accuracy', 'test_loss', 'train_loss')


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'round_seconds'} for line in f]


def _final(workdir, name, variants):
  """The final params and masks in a workdir's checkpoint, leading variant axis."""
  config = tiny_config(**SMALL)
  params = models.get_model(config, 10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  params = params['params']
  state = {'params': params, 'mask': masks.ones_mask(params), 'round': jnp.int32(0)}
  state = jax.tree.map(lambda a: jnp.stack([a] * variants), state)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', name), every=1)
  try:
    tree, meta = ckpt.restore(ckpt.latest_round(), state)
  finally:
    ckpt.close()
  return tree['params'], tree['mask'], meta


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """2 seeds x 2 thresholds of AutoFLIP and 2 seeds of FedAvg, 3 rounds; the round functions
  made, to count their compiles."""
  workdir = str(tmp_path_factory.mktemp('sweep'))
  made = []
  make = federated.make_variant_round_fn
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(federated, 'make_variant_round_fn',
                  lambda *a, **k: made.append(make(*a, **k)) or made[-1])
    # The tiny CNN's layers of 4 and 8 units would shrink to nothing aligned to 8 on a CPU
    # (`layers.unit_alignment`, tested in test_shrink.py); here every removed unit goes.
    patch.setattr(layers, 'unit_alignment', lambda: 1)
    summary = train.train_and_evaluate(tiny_config(**SWEEP), workdir)
  return workdir, summary, made


def test_one_row_per_variant_and_round(sweep):
  workdir, summary, made = sweep
  variants = [(n, s) for s in (0, 1) for n in NAMES] + [('fedavg', 0), ('fedavg', 1)]
  assert [(r['algorithm'], r['seed']) for r in summary] == variants
  assert [r.get('tp') for r in summary] == [0.1, 0.3, 0.1, 0.3, None, None]
  rows = _rows(workdir)
  assert sorted((r['algorithm'], r['seed'], r['round']) for r in rows) == sorted(
      (n, s, r) for n, s in variants for r in range(4))
  first = {(r['algorithm'], r['seed']): r for r in rows if r['round'] == 0}
  # Each threshold is charged the exploration, as its own run would be.
  assert first[(NAMES[0], 0)]['bytes_up'] == first[(NAMES[1], 0)]['bytes_up'] > 0
  # A higher Tp keeps fewer weights; the seeds explore from different θ0 and cohorts.
  assert summary[1]['kept_params'] < summary[0]['kept_params'] < summary[0]['total_params']
  by = {(r['algorithm'], r['seed']): r for r in rows if r['round'] == 3}
  assert by[('fedavg', 0)]['test_loss'] != by[('fedavg', 1)]['test_loss']
  # On a CPU each of the sweep's 4 variants trains its own shrunk model (one program each, the
  # variants run one after another anyway); FedAvg's 2 seeds share one program.
  assert len(made) == 5 and all(fn._cache_size() == 1 for fn in made)


def test_summary_and_table_give_mean_and_std_over_seeds(sweep):
  workdir, summary, _ = sweep
  with open(os.path.join(workdir, 'summary.json')) as f:
    saved = json.load(f)
  agg = {a['algorithm']: a for a in saved['aggregate']}
  accs = [r['test_accuracy'] for r in summary if r['algorithm'] == 'fedavg']
  assert agg['fedavg']['seeds'] == [0, 1]
  assert agg['fedavg']['test_accuracy_mean'] == pytest.approx((accs[0] + accs[1]) / 2)
  # Sample std of two values: |a - b| / sqrt(2).
  assert agg['fedavg']['test_accuracy_std'] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
  mean, std = agg['fedavg']['test_accuracy_mean'], agg['fedavg']['test_accuracy_std']
  assert '| fedavg ' in report.table(summary)
  assert f'{mean:.4f} ± {std:.4f}' in report.table(summary)
  assert os.path.getsize(os.path.join(workdir, 'accuracy_vs_round.png')) > 10_000
  assert os.listdir(os.path.join(workdir, 'tensorboard', 'fedavg', 'seed1'))


@pytest.mark.parametrize('seed, tp', [(1, 0.3)])
def test_a_variant_equals_its_own_run(sweep, tmp_path, seed, tp):
  """The key property: variant (seed, Tp) of the sweep is the run with seeds=seed, tp=Tp."""
  workdir, summary, _ = sweep
  own = str(tmp_path / 'own')
  name = f'autoflip_tp{tp:g}'
  own_summary = train.train_and_evaluate(
      tiny_config(**dict(SMALL, algorithm='autoflip,fedavg', tp=tp, seeds=str(seed))), own)
  for alg, own_alg in ((name, 'autoflip'), ('fedavg', 'fedavg')):
    got = [r for r in _rows(workdir) if (r['algorithm'], r['seed']) == (alg, seed)]
    want = [dict(r, algorithm=alg) for r in _rows(own) if r['algorithm'] == own_alg]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
      assert {k: v for k, v in g.items() if k not in FLOATS} == {
          k: v for k, v in w.items() if k not in FLOATS}
      for k in FLOATS:
        if w[k] is None:
          assert g[k] is None
        else:
          np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-6, err_msg=(alg, k))
  row = next(r for r in summary if (r['algorithm'], r['seed']) == (name, seed))
  for k in ('kept_params', 'compression', 'bytes_up_total', 'kernel_kept', 'units'):
    assert row[k] == own_summary[0][k], k
  index = [(s, t) for s in (0, 1) for t in (0.1, 0.3)].index((seed, tp))
  params, mask, _ = _final(workdir, train.SWEEP_CHECKPOINT, 4)
  own_params, own_mask, _ = _final(own, 'autoflip', 1)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda a: a[index], mask),
               jax.tree.map(lambda a: a[0], own_mask))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[index], b[0], rtol=1e-5, atol=1e-6),
               params, own_params)


def test_sweep_resumes_to_the_same_result(sweep, tmp_path, monkeypatch):
  """Lose the last round's checkpoint and the run's end: the rerun resumes from round 2 and
  redoes round 3 (its rows already written are dropped) to exactly the same result."""
  workdir, _, _ = sweep
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'progress.json'))
  for name in (train.SWEEP_CHECKPOINT, 'fedavg'):
    shutil.rmtree(os.path.join(copy, 'checkpoints', name, '3'))
  monkeypatch.setattr(train.algorithms.autoflip, 'init',
                      lambda *a, **k: pytest.fail('explored again instead of resuming'))
  monkeypatch.setattr(layers, 'unit_alignment', lambda: 1)  # as the fixture's run
  rows = train.train_and_evaluate(tiny_config(**SWEEP), copy)
  assert [r['algorithm'] for r in rows] == NAMES * 2 + ['fedavg'] * 2
  by_key = lambda rs: sorted(rs, key=lambda r: (r['algorithm'], r['seed'], r['round']))
  assert by_key(_rows(copy)) == by_key(_rows(workdir))
  jax.tree.map(np.testing.assert_array_equal, _final(copy, train.SWEEP_CHECKPOINT, 4)[:2],
               _final(workdir, train.SWEEP_CHECKPOINT, 4)[:2])


def test_finished_sweep_is_not_run_again(sweep, monkeypatch):
  workdir, summary, _ = sweep
  monkeypatch.setattr(train, 'run_algorithm', lambda *a, **k: pytest.fail('ran again'))
  rows = train.train_and_evaluate(tiny_config(**SWEEP), workdir)
  assert rows == json.loads(json.dumps(summary))


@pytest.mark.parametrize('per_variant_data', [False, True])
def test_vmapped_and_mapped_variant_layouts_agree(per_variant_data):
  """Variants vmapped (GPU/TPU layout) or one after another (CPU layout): the same models."""
  config = tiny_config()
  model = models.get_model(config, 10)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  guidance = jax.tree.map(lambda p: jax.random.uniform(jax.random.key(p.size), p.shape), params)
  stacked_masks = federated.stack([masks.hybrid_mask(guidance, tp, model.units())
                                   for tp in (0.1, 0.3)])
  rng = np.random.default_rng(0)
  lead = (2,) if per_variant_data else ()
  data = local.ClientData(jnp.asarray(rng.random(lead + (2, 1, 4, 28, 28, 1), np.float32)),
                          jnp.asarray(rng.integers(0, 10, lead + (2, 1, 4)), jnp.int32),
                          jnp.ones(lead + (2, 1, 4), bool))
  n = jnp.full(lead + (2,), 4)
  ids = jnp.broadcast_to(jnp.arange(2), lead + (2,))
  outs = []
  for layout in (0, 1):
    fn = federated.make_variant_round_fn(apply_fn, num_variants=2, optimizer='sgd',
                                         local_epochs=1, clients_per_chunk=1,
                                         per_variant_data=per_variant_data,
                                         variants_per_chunk=layout)
    state = federated.ServerState(federated.stack([params] * 2),  # donated: copies
                                  jax.tree.map(jnp.copy, stacked_masks),
                                  jnp.zeros((2,), jnp.int32))
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    outs.append(fn(state, data, n, ids, keys, jnp.float32(0.1), None)[0])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), outs[0].params,
               outs[1].params)
  assert not np.allclose(outs[0].params['dense0']['kernel'][0],
                         outs[0].params['dense0']['kernel'][1])  # the variants differ
