"""Model-level tools: a model's own init recorded and replayed fused (deferred_init, patch), policies."""
