"""`invoke upgrade` and `invoke rollback`: plan.py (data), runner.py (execution)."""
