"""vertexflow's benchmark harness: ``python benchmarks/run.py`` (see README.md)."""
