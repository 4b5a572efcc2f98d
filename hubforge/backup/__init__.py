"""Backups of the stack with restic: what a snapshot holds (plan.py, pure) and running it (runner.py)."""
