"""Multiple devices: the round, and a whole run, with the client axis split over 8 host devices
equal the same on 1 device."""

import os
import subprocess
import sys

import pytest

from autoflip_jax import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_round_equals_single_device():
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'sharded_round_check.py')],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith('OK') and 'RUN OK' in proc.stdout


def test_mesh_larger_than_the_machine_is_refused():
  with pytest.raises(ValueError, match='config.mesh_devices=4096'):
    sharding.client_mesh(4096)
  assert sharding.client_mesh(1) is None
