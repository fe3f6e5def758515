"""Benchmarks: ``python -m bench NAME [--quick] [--json]``; ``make bench`` runs them all."""
