"""The Colab notebook runs top to bottom on a CPU at its smallest size."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_notebook_executes(tmp_path, monkeypatch):
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', 'autoflip_colab.ipynb'), as_version=4)
  monkeypatch.setenv('AUTOFLIP_NOTEBOOK_SIZE', 'small')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('PYTHONPATH', ROOT)
  monkeypatch.chdir(tmp_path)
  NotebookClient(nb, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': str(tmp_path)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.outputs]
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'backend: cpu' in text
  markdown = ''.join(o.get('data', {}).get('text/markdown', '') for o in outputs)
  assert '| autoflip' in markdown and '| fedavg' in markdown
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 2
  assert (tmp_path / 'runs' / 'notebook_small' / 'metrics.jsonl').exists()
