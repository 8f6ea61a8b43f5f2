"""Benchmark helpers shared by `initkit bench`, the pytest-benchmark files in benchmarks/ and the
GPU report: one timing helper (timing.py), the fill comparison (fills.py), the fused dense layers
(dense.py), whole-model init (models.py) and the GPT-2 model they build (gpt2.py), and models'
own init schemes: plain vs patch() vs deferred_init + materialize (own_init.py), and one rank's
sharded fill at simulated world sizes (sharded.py)."""
