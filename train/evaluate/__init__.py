"""Evaluation commands: ``python -m train.evaluate {wbc,smears,crops} ...`` print JSON on stdout."""
