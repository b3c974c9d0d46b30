"""Shared timing for the benchmarks."""

import statistics
import time

import jax


def time_call(fn, repeats: int) -> tuple[float, float]:
  """(first call seconds, median of `repeats` later calls); each call waits for its result."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def time_interleaved(fns: dict, repeats: int) -> dict:
  """{name: median seconds} of `repeats` calls of each function, taken in turns (a, b, c, a, b,
  c, ...) after one warm-up call each, so that a drift of the machine's speed during the run
  (other jobs, clocks) falls on every way alike instead of on whichever ran last."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}
