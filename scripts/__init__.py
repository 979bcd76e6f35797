"""Benchmarks and checks run as modules from the repository root: `python -m scripts.<name>` (no sys.path edits)."""
