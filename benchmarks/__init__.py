"""The measurement harness of issue 5: ``python -m benchmarks`` (see ``benchmarks/README.md``)."""
