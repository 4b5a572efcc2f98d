"""User-facing errors: one line that says what was wrong and what to do next."""

from __future__ import annotations


class HubforgeError(Exception):
    """An error the user can act on; tasks turn it into `Exit(message)` without a traceback."""


class DockerUnavailable(HubforgeError):
    """No Docker daemon answers."""


class BuildFailed(HubforgeError):
    """`docker build` failed; the message carries the failing step and the log tail."""
