"""Speed figures for predictq, measured beside a no-model floor and the textbook baseline.

``python -m benchmarks`` (``make bench``) runs the whole suite; each module owns one part:
the synthetic table, the child processes, the load generator, the HTTP, in-process and
batch measurements, the targets and the report.
"""
