"""The memory-aware layout (`autoflip_jax/memory.py`)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from autoflip_jax import config_checks, memory, train
from autoflip_jax import setup as setup_lib
from tests.helpers import tiny_config


@pytest.fixture(scope='module')
def vmapped():
  """A tiny job laid out as on a GPU: the cohort of 4 in one vmap."""
  config = tiny_config(clients_per_round=4, algorithm='fedavg')
  config_checks.validate_config(config)
  return dataclasses.replace(setup_lib.resolve(config), clients_per_chunk=0,
                             variants_per_chunk=0)


def test_the_round_needs_more_memory_with_more_clients_in_a_chunk(vmapped):
  needs = [memory.round_bytes(vmapped, c, 1, 0) for c in (4, 2, 1)]
  assert needs[0] > needs[1] > needs[2] > 0


def test_fit_takes_the_largest_chunk_that_fits(vmapped):
  two, four = (memory.round_bytes(vmapped, c, 1, 0) for c in (2, 4))
  budget = (two + four) // 2
  fitted = memory.fit(vmapped, available=budget, margin=1.0)
  assert fitted.clients_per_chunk == 2
  assert fitted.layout['round_mib'] * memory.MIB == pytest.approx(two)
  assert memory.fit(vmapped, available=10 * four, margin=1.0).clients_per_chunk == 4


def test_fit_stops_before_training_when_one_client_does_not_fit(vmapped):
  with pytest.raises(memory.DoesNotFitError, match=r'clients_per_chunk=1 it needs .* MiB .*'
                     r'available.*batch_size'):
    memory.fit(vmapped, available=1000, margin=1.0)


def test_a_chunk_set_by_hand_is_only_checked(vmapped):
  fixed = dataclasses.replace(vmapped, config=tiny_config(clients_per_round=4,
                                                          clients_per_chunk=4))
  four = memory.round_bytes(vmapped, 4, 1, 0)
  with pytest.raises(memory.DoesNotFitError, match='clients_per_chunk=4'):
    memory.fit(fixed, available=four - 1, margin=1.0)


def test_the_exploration_gets_its_own_chunk(vmapped):
  """8 explorers and a cohort of 4: a budget that holds the round of 4 and the exploration of 4
  but not that of 8 keeps the round in one vmap and explores 4 at a time."""
  config = tiny_config(num_clients=8, clients_per_round=4, c_exp=1.0, algorithm='autoflip')
  config_checks.validate_config(config)
  setup = dataclasses.replace(setup_lib.resolve(config), clients_per_chunk=0,
                              variants_per_chunk=0)
  explore = {c: memory.explore_bytes(setup, c) for c in (8, 4)}
  budget = max(memory.round_bytes(setup, 4, 1, 0), explore[4]) + 1
  assert budget < explore[8]
  fitted = memory.fit(setup, available=budget, margin=1.0)
  assert fitted.clients_per_chunk == 4 and fitted.explore_chunk == 4
  assert fitted.context(0).clients_per_chunk == 4


def test_a_run_logs_its_layout_in_the_summary(tmp_path):
  train.train_and_evaluate(tiny_config(memory_check=True, algorithm='fedavg', num_rounds=1),
                           str(tmp_path))
  with open(tmp_path / 'summary.json') as f:
    layout = json.load(f)['layout']
  assert layout['clients_per_chunk'] >= 1 and layout['round_mib'] > 0
  assert layout['available_mib'] > layout['round_mib']
