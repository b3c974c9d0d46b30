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
