"""Backups with restic: what a snapshot holds (plan), the one-shot restic container (job), the schedule's service
(scheduler) and the status it leaves for `invoke status` and /hub/metrics (status).

Its floor is above helpers: it imports naming, settings and labs; web reads its status."""
