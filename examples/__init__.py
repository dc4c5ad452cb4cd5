"""Runnable examples (run from the repository root: ``python -m examples.counter_service``)."""
