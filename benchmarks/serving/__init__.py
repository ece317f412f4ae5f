"""Helpers of benchmarks/serve.py (processes, h2load, the report)."""
