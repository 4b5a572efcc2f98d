"""The one subprocess gateway: argv lists in, echoed with secrets hidden, stderr tail on failure."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from .errors import HubforgeError

log = logging.getLogger(__name__)

REDACTED = "***"


def redact(argv: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """The command line as a shell would show it, with every secret value replaced."""
    text = shlex.join(argv)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def run(
    argv: Sequence[str],
    *,
    secrets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    input: str | None = None,
    check: bool = True,
    capture: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv; raise HubforgeError with the tail of stderr when it fails and `check` is set."""
    shown = redact(argv, secrets)
    log.info("$ %s", shown)
    try:
        result = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input,
            text=True,
            capture_output=capture,
        )
    except FileNotFoundError as exc:
        raise HubforgeError(f"{argv[0]} is not installed (needed for {what or shown}); run `invoke setup`") from exc
    if check and result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-15:])
        for secret in secrets:
            if secret:
                tail = tail.replace(secret, REDACTED)
        raise HubforgeError(f"{what or shown} failed (exit {result.returncode}):\n{tail}")
    return result
