"""The registry of algorithms: names to modules, above the implementations (jaxpruner's `api.py`).

  autoflip   AutoFLIP: exploration, guidance, the hybrid mask            autoflip.py
  fedavg     FedAvg, dense                                               fedavg.py
  prunefl    PruneFL (Jiang et al., TNNLS 2022), adaptive unstructured    prunefl.py
  eflprune   EFLPrune (our best identification), structured L1 units     eflprune.py
  random     random mask at AutoFLIP's kernel sparsity (control)          controls.py
  magnitude  global-magnitude mask at AutoFLIP's sparsity (control)       controls.py

Each module builds an `base.Algorithm` (its interface is in `base.py`) with
`make(config, units)` and checks its own config fields with `check_config(config, names)`;
adding an algorithm is its module plus its lines in `_MAKERS` and `_CHECKS`.
"""

from __future__ import annotations

from autoflip_jax.algorithms import autoflip, controls, eflprune, fedavg, prunefl
from autoflip_jax.algorithms.base import Algorithm, Context, Start

_MAKERS = {
    'autoflip': autoflip.make,
    'fedavg': fedavg.make,
    'prunefl': prunefl.make,
    'eflprune': eflprune.make,
    'random': controls.make('random'),
    'magnitude': controls.make('magnitude'),
}
ALGORITHMS = tuple(_MAKERS)
# Every module's field checks run for every config: a bad value is wrong even when its
# algorithm is not in this run's list (the next run may add it).
_CHECKS = (autoflip.check_config, controls.check_config, prunefl.check_config,
           eflprune.check_config)


def parse(algorithm: str) -> tuple[str, ...]:
  """`config.algorithm` ('autoflip,fedavg') as names; ValueError naming the field otherwise."""
  names = tuple(a.strip() for a in algorithm.split(',') if a.strip())
  unknown = [a for a in names if a not in ALGORITHMS]
  if not names or unknown:
    raise ValueError(f'config.algorithm={algorithm!r}: each comma-separated name must be one of '
                     f'{ALGORITHMS}')
  return names


def validate(config, names: tuple[str, ...]) -> None:
  """Each algorithm's checks of its own config fields (ValueError naming the field)."""
  for check in _CHECKS:
    check(config, names)


def get(name: str, config, units) -> Algorithm:
  """The algorithm `name` for this config and the model's units."""
  return _MAKERS[name](config, units)


__all__ = ['ALGORITHMS', 'Algorithm', 'Context', 'Start', 'get', 'parse', 'validate']
