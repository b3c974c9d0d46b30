"""autoflip-jax: AutoFLIP federated hybrid pruning in JAX."""
