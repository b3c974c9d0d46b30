"""Federated datasets: loading, client partitioning and batching.

This package only hands names on; the code lives in its modules:
  loader.py: `load`, `validate`, `FederatedDataset` and the config.data
    fields they read (set by every config; defaults in
    experiments/configs/default.py).
  sources.py: the sources by name (`DATASETS`); base.py: their shared types,
    `DatasetNotFoundError`, `MalformedDataError`; embedded.py,
    tfds_source.py, leaf.py, shakespeare.py: the sources themselves.
  partition.py: client partitioners; batching.py: `pack_clients`,
    `steps_for`, `ClientBatch`; stats.py: per-client statistics.
"""

from autoflip_jax.data import embedded
from autoflip_jax.data import sources
from autoflip_jax.data.base import DatasetNotFoundError
from autoflip_jax.data.base import MalformedDataError
from autoflip_jax.data.batching import ClientBatch
from autoflip_jax.data.batching import pack_clients
from autoflip_jax.data.batching import steps_for
from autoflip_jax.data.loader import FederatedDataset
from autoflip_jax.data.loader import load
from autoflip_jax.data.loader import noisy_clients
from autoflip_jax.data.loader import validate
from autoflip_jax.data.sources import NAMES as DATASETS

__all__ = ('ClientBatch', 'DATASETS', 'DatasetNotFoundError',
           'FederatedDataset', 'MalformedDataError', 'embedded', 'load', 'noisy_clients',
           'pack_clients', 'sources', 'steps_for', 'validate')
