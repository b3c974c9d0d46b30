"""The data configs of the data tests: the default job's config.data with a few fields changed.

Every data field comes from `experiments/configs/default.py`, the one place that sets them, so a
test config never misses one.
"""

import ml_collections

from experiments.configs import default


def data_config(**overrides) -> ml_collections.ConfigDict:
  """`default.get_config().data` with `overrides` (any value type, e.g. 1.5 for an int field)."""
  fields = default.get_config().data.to_dict()
  unknown = set(overrides) - set(fields)
  if unknown:
    raise KeyError(f'not config.data fields: {sorted(unknown)}')
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)
