"""Tp sweep in one program: each threshold side by side equals its own sequential run."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoflip_jax import checkpoint, federated, local, masks, models, tp_sweep, train
from tests.helpers import tiny_config

TPS = (0.1, 0.3)
# 100 examples a client (one local step an epoch), 200 test examples: the runs are compile-bound.
# Checkpoints after rounds 0, 2 and 3 (the last); the resume test drops the last.
SMALL = {'data.max_examples_per_client': 100, 'data.max_test_examples': 200, 'num_rounds': 3,
         'checkpoint_every': 2, 'algorithm': 'autoflip'}
TIMING = ('round_seconds',)


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _params(workdir, name, stacked):
  """The final params in a workdir's checkpoint (`stacked`: the sweep's, one per threshold)."""
  config = tiny_config(**SMALL)
  params = models.get_model(config, 10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  params = params['params']
  state = {'params': params, 'mask': masks.ones_mask(params), 'round': jnp.int32(0)}
  if stacked:
    state = jax.tree.map(lambda a: jnp.stack([a] * len(TPS)), state)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints', name), every=1)
  try:
    tree, _ = ckpt.restore(ckpt.latest_round(), state)
  finally:
    ckpt.close()
  return tree['params'], tree['mask']


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """A 2-threshold sweep, 3 rounds; the sweep round's jitted function, to count its compiles."""
  workdir = str(tmp_path_factory.mktemp('sweep'))
  made = []
  make = tp_sweep.make_sweep_round_fn
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tp_sweep, 'make_sweep_round_fn',
                  lambda *a, **k: made.append(make(*a, **k)) or made[-1])
    summary = train.train_and_evaluate(tiny_config(tp_sweep='0.1,0.3', **SMALL), workdir)
  return workdir, summary, made


def test_one_row_per_threshold_and_round(sweep):
  workdir, summary, made = sweep
  names = ['autoflip_tp0.1', 'autoflip_tp0.3']
  assert [r['algorithm'] for r in summary] == names
  assert [r['tp'] for r in summary] == list(TPS)
  rows = _rows(workdir)
  assert sorted((r['algorithm'], r['round']) for r in rows) == [
      (n, r) for n in names for r in range(4)]
  first = {r['algorithm']: r for r in rows if r['round'] == 0}
  # Each threshold is charged the exploration, as its own run would be.
  assert first[names[0]]['bytes_up'] == first[names[1]]['bytes_up'] > 0
  assert summary[0]['exploration_bytes'] == summary[1]['exploration_bytes'] > 0
  # A higher Tp keeps fewer weights.
  assert summary[1]['kept_params'] < summary[0]['kept_params'] < summary[0]['total_params']
  with open(os.path.join(workdir, 'summary.json')) as f:
    saved = json.load(f)
  assert [r['algorithm'] for r in saved['rows']] == names
  assert '| autoflip_tp0.3' in train.report.table(summary)
  assert os.path.getsize(os.path.join(workdir, 'accuracy_vs_round.png')) > 10_000
  assert len(made) == 1 and made[0]._cache_size() == 1  # one program for every round


def test_sweep_equals_sequential_runs(sweep, tmp_path):
  """The key property: threshold i of the sweep is the run with config.tp = TPS[i]."""
  workdir, summary, _ = sweep
  sweep_rows = _rows(workdir)
  sweep_params, sweep_mask = _params(workdir, tp_sweep.CHECKPOINT_NAME, stacked=True)
  for i, tp in enumerate(TPS):
    seq_dir = str(tmp_path / f'tp{tp}')
    seq_summary = train.train_and_evaluate(tiny_config(tp=tp, **SMALL), seq_dir)[0]
    name = tp_sweep.sweep_name(tp)
    got = [r for r in sweep_rows if r['algorithm'] == name]
    want = [dict(r, algorithm=name) for r in _rows(seq_dir)]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
      floats = ('test_accuracy', 'test_loss', 'train_loss')
      assert {k: v for k, v in g.items() if k not in floats} == {
          k: v for k, v in w.items() if k not in floats}
      for k in floats:
        if w[k] is None:
          assert g[k] is None
        else:
          np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-6, err_msg=(tp, k))
    for k in ('kept_params', 'compression', 'bytes_up_total', 'bytes_down_total', 'kernel_kept',
              'units', 'exploration_bytes'):
      assert summary[i][k] == seq_summary[k], (tp, k)
    params, mask = _params(seq_dir, 'autoflip', stacked=False)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda a: a[i], sweep_mask), mask)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                 sweep_params, params)


def test_sweep_resumes_to_the_same_result(sweep, tmp_path, monkeypatch):
  """Lose the last round's checkpoint and the run's end: the rerun resumes from round 2 and
  redoes round 3 (its rows already written are dropped) to exactly the same result."""
  workdir, _, _ = sweep
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, 'progress.json'))
  shutil.rmtree(os.path.join(copy, 'checkpoints', tp_sweep.CHECKPOINT_NAME, '3'))
  monkeypatch.setattr(tp_sweep.algorithms, 'init_autoflip_sweep',
                      lambda *a, **k: pytest.fail('explored again instead of resuming'))
  rows = train.train_and_evaluate(tiny_config(tp_sweep='0.1,0.3', **SMALL), copy)
  assert [r['algorithm'] for r in rows] == ['autoflip_tp0.1', 'autoflip_tp0.3']
  by_key = lambda rs: sorted(rs, key=lambda r: (r['algorithm'], r['round']))
  assert by_key(_rows(copy)) == by_key(_rows(workdir))
  jax.tree.map(np.testing.assert_array_equal,
               _params(copy, tp_sweep.CHECKPOINT_NAME, stacked=True),
               _params(workdir, tp_sweep.CHECKPOINT_NAME, stacked=True))


def test_finished_sweep_is_not_run_again(sweep, monkeypatch):
  workdir, summary, _ = sweep
  monkeypatch.setattr(tp_sweep, 'run_sweep', lambda *a, **k: pytest.fail('ran again'))
  rows = train.train_and_evaluate(tiny_config(tp_sweep='0.1,0.3', **SMALL), workdir)
  assert rows == json.loads(json.dumps(summary))



def test_vmapped_and_mapped_threshold_layouts_agree():
  """Thresholds vmapped (GPU/TPU layout) or one after another (CPU layout): the same models."""
  config = tiny_config()
  model = models.get_model(config, 10)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  guidance = jax.tree.map(lambda p: jax.random.uniform(jax.random.key(p.size), p.shape), params)
  stacked_masks = tp_sweep.stack([masks.hybrid_mask(guidance, tp, model.units()) for tp in TPS])
  rng = np.random.default_rng(0)
  data = local.ClientData(jnp.asarray(rng.random((2, 1, 4, 28, 28, 1), np.float32)),
                                jnp.asarray(rng.integers(0, 10, (2, 1, 4)), jnp.int32),
                                jnp.ones((2, 1, 4), bool))
  outs = []
  for layout in (0, 1):
    fn = tp_sweep.make_sweep_round_fn(apply_fn, optimizer='sgd', local_epochs=1,
                                      clients_per_chunk=1, thresholds_per_chunk=layout)
    state = federated.ServerState(tp_sweep.stack([params] * len(TPS)),  # donated: copies
                                  jax.tree.map(jnp.copy, stacked_masks),
                                  jnp.zeros((len(TPS),), jnp.int32))
    outs.append(fn(state, data, jnp.array([4, 4]), jnp.arange(2), jax.random.key(1),
                   jnp.float32(0.1), None)[0])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), outs[0].params,
               outs[1].params)
  assert not np.allclose(outs[0].params['dense0']['kernel'][0],
                         outs[0].params['dense0']['kernel'][1])  # the thresholds differ
