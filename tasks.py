"""hubforge tasks: each parses its flags and calls the library; user errors end as one line."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent


def user_errors(fn):
    """Turn HubforgeError into `Exit(message)`: one line, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hubforge.errors import HubforgeError

        try:
            return fn(*args, **kwargs)
        except HubforgeError as exc:
            raise Exit(f"error: {exc}", code=1) from None

    return wrapper


def settings(c, base: str = "auto"):
    """Build settings from invoke config (invoke.yaml / INVOKE_HUBFORGE_*) and flags."""
    from hubforge.builder import Settings
    from hubforge.errors import HubforgeError
    from hubforge.targets import BASE_MODES

    if base not in BASE_MODES:
        raise HubforgeError(f"--base={base!r} is not valid; use one of: {', '.join(BASE_MODES)}")
    cfg = c.config.get("hubforge", {})
    cache = Path(os.path.expanduser(cfg.get("cache_dir", "~/.cache/hubforge")))
    defaults = Settings(root=ROOT, cache_dir=cache)
    return Settings(
        root=ROOT,
        cache_dir=cache,
        base_mode=base,
        suite=cfg.get("suite", defaults.suite),
        mirror=cfg.get("mirror", defaults.mirror),
        security_mirror=cfg.get("security_mirror", defaults.security_mirror),
        upstream=cfg.get("upstream", defaults.upstream),
    )


@task(help={
    "target": "one of base, hub, lab, gpu-probe (default: all of them)",
    "flavor": "lab flavour, e.g. datascience (default: the lean lab)",
    "base": "auto | pull | bootstrap: where the Debian base comes from (default auto)",
    "plan": "print the graph, keys and what would rebuild and why; build nothing",
    "verbose": "stream the full build log",
})
@user_errors
def build(c, target=None, flavor=None, base="auto", plan=False, verbose=False):
    """Build the images whose content key is not yet in the local image store."""
    from hubforge import app

    app.configure_logging(verbose)
    app.build(settings(c, base), target, flavor, plan, verbose)


@task(help={
    "target": "lock only this target (hub, lab, lab-datascience, gpu-probe)",
    "only": "python | apt: lock only one kind",
    "base": "auto | pull | bootstrap, for resolving Debian packages",
})
@user_errors
def lock(c, target=None, only=None, base="auto"):
    """Regenerate the lock files (requirements.lock with hashes, apt.lock) from the .in files."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    if only not in (None, "python", "apt"):
        raise HubforgeError(f"--only={only!r} is not valid; use python or apt")
    app.configure_logging(False)
    app.lock(settings(c, base), target, only)


@task(help={
    "keep": "how many superseded images to keep per repository (default 0)",
    "wheels": "also empty the host caches of wheels, .debs and node_modules",
    "dry_run": "print what would be removed",
})
@user_errors
def clean(c, keep=0, wheels=False, dry_run=False):
    """Remove hubforge images older than the current keys (and the wheel cache with --wheels)."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    if int(keep) < 0:
        raise HubforgeError(f"--keep must be 0 or more, got {keep}")
    app.clean(settings(c), int(keep), wheels, dry_run)


@task
@user_errors
def doctor(c):
    """Check the Docker daemon, Compose v2, disk space, bootstrap prerequisites and Chromium."""
    from hubforge import app

    if not app.report_doctor(settings(c)):
        raise Exit("some checks failed: run `invoke setup` (as root on Debian/Ubuntu) or apply the fixes above", code=1)


@task
@user_errors
def setup(c):
    """Install and start what doctor finds missing (Debian/Ubuntu, as root)."""
    from hubforge import app

    app.run_setup(settings(c))


@task(help={
    "quick": "unit tests only (no Docker)",
    "k": "only tests matching this pytest expression",
})
@user_errors
def test(c, quick=False, k=None):
    """Run the test suites: unit, then the image tests against freshly built images."""
    from hubforge import app, doctor as checks

    cfg = settings(c)
    args = [sys.executable, "-m", "pytest", "tests/unit"]
    if not quick:
        checks.ensure(cfg.cache_dir, {"docker", "compose"}, app.say)
        app.build(cfg, None, None, False, False)
        args.append("tests/images")
    if k:
        args += ["-k", k]
    result = c.run(" ".join(args), warn=True, pty=False, env={"TESTCONTAINERS_RYUK_DISABLED": "true"})
    if result.exited != 0:
        raise Exit(f"tests failed (exit {result.exited})", code=result.exited)
