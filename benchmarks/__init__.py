"""Benchmarks of the handbook's training configurations against plain TRL: `python benchmarks/run.py --help`."""
