"""Benchmarks that `initkit bench` runs."""
