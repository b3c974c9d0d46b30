"""Gradual pruning (`mask_ramp_rounds`): the threshold's schedule, the masks it gives round by
round, the final mask equal to the unramped one, config errors and a resume mid-ramp."""

import functools
import json
import os
import shutil

import pytest

from autoflip_jax import checkpoint, train
from autoflip_jax.algorithms import autoflip
from autoflip_jax.config_checks import validate_config
from tests.helpers import tiny_config

RUN = dict(algorithm='autoflip', num_rounds=4, mask_ramp_rounds=3, tp=0.5, checkpoint_every=1)


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f]


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def test_ramp_tp_rises_cubically_to_tp_and_stays():
  tps = [autoflip.ramp_tp(0.3, r, 4) for r in range(1, 7)]
  assert tps[0] == pytest.approx(0.3 * (1 - 0.75 ** 3))
  assert tps[1] == pytest.approx(0.3 * (1 - 0.5 ** 3))
  assert all(a < b for a, b in zip(tps[:3], tps[1:4]))
  assert tps[3:] == [pytest.approx(0.3)] * 3


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  ramped = str(tmp_path_factory.mktemp('ramped'))
  plain = str(tmp_path_factory.mktemp('plain'))
  with pytest.MonkeyPatch.context() as patch:  # every round's checkpoint, to resume from round 1
    patch.setattr(checkpoint, 'Checkpointer', functools.partial(checkpoint.Checkpointer, keep=9))
    train.train_and_evaluate(tiny_config(**RUN), ramped)
  train.train_and_evaluate(tiny_config(**dict(RUN, mask_ramp_rounds=0)), plain)
  return ramped, plain


def test_mask_tightens_over_the_ramp_then_equals_the_unramped_mask(run):
  ramped, plain = run
  kept = [r['kept_params'] for r in _rows(ramped) if r['round'] > 0]
  plain_kept = [r['kept_params'] for r in _rows(plain) if r['round'] > 0]
  assert kept[0] > kept[1] > kept[2] == kept[3]  # rounds 1-3 ramp, then Tp's mask
  assert kept[2] == plain_kept[0] == plain_kept[-1]
  assert _rows(ramped)[1]['bytes_down'] > _rows(plain)[1]['bytes_down']
  (row,), (plain_row,) = _summary(ramped)['rows'], _summary(plain)['rows']
  for key in ('kept_params', 'kernel_kept', 'units', 'flops_structured'):
    assert row[key] == plain_row[key], key


def test_resume_mid_ramp_gives_the_same_metrics(run, tmp_path):
  ramped, _ = run
  copy = str(tmp_path / 'copy')
  shutil.copytree(ramped, copy)
  os.remove(os.path.join(copy, 'progress.json'))
  for r in (2, 3, 4):  # resume from round 1: round 2 trains the restored mask, and the mask
    # of round 3 comes from the restored guidance and Tp
    shutil.rmtree(os.path.join(copy, 'checkpoints', 'autoflip', str(r)))
  train.train_and_evaluate(tiny_config(**RUN), copy)
  strip = lambda rows: [json.dumps({k: v for k, v in r.items() if k != 'round_seconds'},
                                   sort_keys=True) for r in rows]
  assert strip(_rows(copy)) == strip(_rows(ramped))


@pytest.mark.parametrize('overrides, message', [
    ({'mask_ramp_rounds': -1}, 'config.mask_ramp_rounds=-1'),
    ({'mask_ramp_rounds': 3, 'guidance_per_round': True},
     'config.mask_ramp_rounds=3 cannot be combined with config.guidance_per_round=True'),
    ({'mask_ramp_rounds': 9, 'num_rounds': 5},
     'config.mask_ramp_rounds=9 exceeds config.num_rounds=5'),
])
def test_bad_ramps_are_refused_before_anything_runs(overrides, message):
  with pytest.raises(ValueError) as err:
    validate_config(tiny_config(**overrides))
  assert message in str(err.value)
