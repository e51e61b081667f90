"""Veritas online engine: sources, models, XAI, the detection pipeline, sinks and the CLI."""

__version__ = "0.1.0"
