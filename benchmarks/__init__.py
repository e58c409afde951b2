"""The contdepth benchmark suite: `python -m benchmarks [--quick] [--only NAME ...]`."""
