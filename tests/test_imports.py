"""The layers hold: `lint-imports` checks the contracts in `.importlinter` (no import cycles,
lazy imports inside functions included; data walks one way; the engine reads no config)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
  lint = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  proc = subprocess.run([lint, '--config', os.path.join(ROOT, '.importlinter')], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert 'Contracts: 4 kept, 0 broken.' in proc.stdout, proc.stdout[-2000:]
