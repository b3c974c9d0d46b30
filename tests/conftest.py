"""Shared pytest setup, for the suite's time (it is compile-bound: tiny programs, many of them).

* XLA's optimisation passes only cost compile time on the tests' tiny programs (about a third of
  the suite's runtime without this).
* JAX's persistent compilation cache, shared by the pytest workers and the experiments the tests
  start in subprocesses (they inherit the environment): many tests compile the very same
  programs (the tiny config's round, exploration and masks), which then compile once per suite.
  The cache is keyed by the program, the compile options and the JAX version, so it cannot change
  a result. An explicit `JAX_COMPILATION_CACHE_DIR` wins; the default lives in the system's
  temporary folder and is reused by later runs on the same machine.
"""

import os
import tempfile

CACHE = {'JAX_COMPILATION_CACHE_DIR': os.path.join(tempfile.gettempdir(),
                                                   f'autoflip_jax_tests_{os.getuid()}'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
for name, value in CACHE.items():
  os.environ.setdefault(name, value)  # for the subprocesses

import jax  # noqa: E402

jax.config.update('jax_disable_most_optimizations', True)
# Also here: a plugin may have imported jax before the environment was set.
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
jax.config.update('jax_persistent_cache_min_entry_size_bytes',
                  int(os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES']))
