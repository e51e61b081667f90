"""Throughput and latency harness behind ``veritas bench`` (``benchmarks/README.md``).

``settings`` (sizes and workloads), ``synthetic`` (face streams), ``measure`` (timing,
FLOPs, memory), the workloads ``stages`` (a), ``end_to_end`` (b, d), ``realtime`` (c),
``profile`` and ``kernels``, the paper-style ``baseline``, ``report`` (targets, table,
JSON), ``harness`` (:func:`~benchmarks.harness.run_bench`) and ``cli``.
"""
