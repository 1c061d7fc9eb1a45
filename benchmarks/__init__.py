"""The benchmark scripts, run from the repository root as `python -m benchmarks.NAME` (not shipped in the wheel)."""
