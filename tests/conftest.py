"""Shared pytest setup: the tests' programs are tiny, so XLA's optimisation passes only cost
compile time (about a third of the suite's runtime without this)."""

import jax

jax.config.update('jax_disable_most_optimizations', True)
