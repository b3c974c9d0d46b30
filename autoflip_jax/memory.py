"""Memory-aware layout: the largest chunk of clients whose programs fit the device.

Before the first round the runner (`train.train_and_evaluate`) calls `fit(setup)`. It compiles
ahead of time, from shapes alone (nothing runs, no data moves), the programs a run will use at
their largest: the round of every variant side by side on a cohort padded to the dataset's
largest client (`Packer.max_steps`), AutoFLIP's exploration over its explorers, and one
evaluation batch. XLA's buffer assignment (`compiled.memory_analysis()`: arguments + temporaries
+ outputs not aliased to arguments; the same figure on CPU, GPU and TPU) gives the bytes each
needs, and the device tells what it has (a GPU's or TPU's `memory_stats()`; a CPU's MemAvailable).

With `config.clients_per_chunk = 0` (auto) the round takes the largest chunk, from the backend's
layout (`federated.resolve_chunk`) down through the divisors of the cohort, that needs at most
`MARGIN` of the memory available; the exploration, on its own, the largest that fits among the
same candidates (its chunks need not divide anything). A chunk set by hand is only checked. If one
client at a time does not fit, the run stops before training with the memory needed, the memory
available and the flags that would help. Results do not depend on the chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from autoflip_jax import layout, local
from autoflip_jax.algorithms import autoflip
from autoflip_jax.data import batching

MARGIN = 0.8   # the share of the available memory a program may plan to use
MIB = 2 ** 20


class DoesNotFitError(ValueError):
  """Even one client at a time needs more memory than the device has."""


def program_bytes(compiled) -> int | None:
  """XLA's buffer figure for one call of a compiled program (None where XLA gives none)."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes)


def available_bytes(device: jax.Device | None = None) -> int | None:
  """Memory the device can still give: bytes_limit - bytes_in_use on a GPU/TPU, MemAvailable on
  a CPU (/proc/meminfo); None where neither is known."""
  device = device or jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _sds(shape, dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _client_data(setup, clients: int, lead: tuple = ()):
  """ShapeDtypeStructs of `clients` clients padded to the dataset's largest client."""
  pack = setup.pack
  dtype = batching.packed_dtype(np.asarray(setup.dataset.client_x[0]).dtype)
  lead = lead + (clients, pack.max_steps, pack.batch_size)
  return local.ClientData(_sds(lead + tuple(setup.dataset.input_shape), dtype),
                          _sds(lead, jnp.int32), _sds(lead, jnp.bool_))


def round_bytes(setup, chunk: int, variants: int, variants_per_chunk: int) -> int | None:
  """Bytes of the full-model round of `variants` runs side by side on a worst-case cohort."""
  config = setup.config
  cohort = config.clients_per_round
  per_variant_data = len(setup.seeds) > 1
  fn = setup.round_fn(variants, per_variant_data=per_variant_data, clients_per_chunk=chunk,
                      variants_per_chunk=variants_per_chunk)
  state = jax.eval_shape(lambda p: setup.server_state([p] * variants), setup.params_like)
  lead = (variants,) if per_variant_data else ()
  data = _client_data(setup, cohort, lead)
  ints = _sds(lead + (cohort,), jnp.int32)
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), variants))
  compiled = fn.lower(state, data, ints, ints, keys, _sds((), jnp.float32), None).compile()
  return program_bytes(compiled)


def explore_bytes(setup, chunk: int) -> int | None:
  """Bytes of AutoFLIP's exploration over its explorers, `chunk` at a time."""
  config = setup.config
  count = len(autoflip.explorer_ids(config.num_clients, config.c_exp, config.seed))
  fn = autoflip.explore_fn(config, setup.apply_fn, chunk)
  key = jax.eval_shape(lambda: jax.random.key(0))
  compiled = fn.lower(setup.params_like, _client_data(setup, count),
                      _sds((count,), jnp.int32), key).compile()
  return program_bytes(compiled)


def eval_bytes(setup) -> int | None:
  """Bytes of one evaluation batch."""
  config = setup.config
  x = _sds((config.eval_batch_size,) + tuple(setup.dataset.input_shape),
           setup.dataset.test_x.dtype)
  return program_bytes(layout.jit(setup.apply_fn).lower(setup.params_like, x).compile())


def _candidates(start: int, total: int, divides: bool) -> list[int]:
  """Chunks to try, largest first: `start` (0 = all `total`), then smaller ones down to 1."""
  first = total if start == 0 else min(start, total)
  if divides:
    return [d for d in range(first, 0, -1) if total % d == 0]
  out, c = [], first
  while c > 1:
    out.append(c)
    c = -(-c // 2)
  return out + [1]


def _pick(name: str, measure: Callable[[int, int], int | None],
          layouts: list[tuple[int, int]], budget: int) -> tuple[int, int, int | None]:
  """The first (clients per chunk, variants per chunk) whose program fits `budget`:
  (chunk, variants_per_chunk, bytes); DoesNotFitError(name, chunk, bytes) of the last tried."""
  for chunk, v in layouts:
    need = measure(chunk, v)
    if need is None or need <= budget:
      return chunk, v, need
    logging.info('memory: the %s with clients_per_chunk=%d (variants %s) needs %.0f MiB > '
                 '%.0f MiB', name, chunk, 'vmapped' if v == 0 else 'one after another',
                 need / MIB, budget / MIB)
  raise DoesNotFitError(name, chunk, need)


def fit(setup, *, available: int | None = None, margin: float = MARGIN):
  """`setup` with the largest chunks that fit (module docstring); logs the layout chosen."""
  config = setup.config
  if setup.mesh is not None:
    logging.info('memory: layout of the mesh kept as configured (clients_per_chunk=%d)',
                 setup.clients_per_chunk)
    return setup
  available = available_bytes() if available is None else available
  if available is None:
    logging.info('memory: the device does not say how much it has; layout kept')
    return setup
  budget = int(margin * available)
  variants = len(setup.seeds) * max(1, len(setup.tps))
  fixed = config.clients_per_chunk != 0
  figures = {}
  vpc = setup.variants_per_chunk
  rounds = [(c, vpc) for c in _candidates(setup.clients_per_chunk, config.clients_per_round,
                                          True)][:1 if fixed else None]
  if variants > 1 and vpc == 0:
    rounds += [(c, 1) for c, _ in rounds]  # then the variants one after another
  try:
    chunk, v, figures['round'] = _pick(
        'round', lambda c, v: round_bytes(setup, c, variants, v), rounds, budget)
    explore_chunk = chunk
    if 'autoflip' in config.algorithm.split(','):
      start = setup.clients_per_chunk if fixed else (0 if setup.clients_per_chunk == 0 else 1)
      count = len(autoflip.explorer_ids(config.num_clients, config.c_exp, config.seed))
      explore = [(c, 0) for c in _candidates(start, count, False)][:1 if fixed else None]
      explore_chunk, _, figures['exploration'] = _pick(
          'exploration', lambda c, _: explore_bytes(setup, c), explore, budget)
    figures['evaluation'] = eval_bytes(setup)
  except DoesNotFitError as e:
    name, failed, need = e.args
    raise DoesNotFitError(
        f'The {name} does not fit in memory: with clients_per_chunk={failed} it needs '
        f'{need / MIB:,.0f} MiB (XLA memory_analysis), and {available / MIB:,.0f} MiB are '
        f'available ({margin:.0%} of it may be planned: {budget / MIB:,.0f} MiB). The largest '
        f'client has {setup.pack.max_steps} steps of {setup.pack.batch_size}. What would help: '
        f'--config.batch_size smaller, --config.clients_per_chunk=1, fewer runs side by side '
        f'(--config.seeds, --config.tp_sweep: {variants} now), a smaller model, or a device '
        f'with more memory.') from None
  logging.info('memory: clients_per_chunk=%d for the round (%s variants), %d for the '
               'exploration; needs %s of %.0f MiB available', chunk,
               'vmapped' if v == 0 else 'sequential', explore_chunk,
               ', '.join(f'{k} {b / MIB:,.0f} MiB' for k, b in figures.items() if b is not None),
               available / MIB)
  return dataclasses.replace(setup, clients_per_chunk=chunk, variants_per_chunk=v,
                             explore_chunk=explore_chunk,
                             layout={'clients_per_chunk': chunk, 'variants_per_chunk': v,
                                     'explore_chunk': explore_chunk,
                                     'available_mib': available / MIB,
                                     **{f'{k}_mib': (b / MIB if b is not None else None)
                                        for k, b in figures.items()}})

