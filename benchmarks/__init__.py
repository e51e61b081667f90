"""Throughput and latency harness behind ``veritas bench``."""
