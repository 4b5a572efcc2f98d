"""hubforge tasks: each parses its flags and calls the library; user errors end as one line."""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import invoke
from invoke import Exit

ROOT = Path(__file__).resolve().parent


class Task(invoke.Task):
    """A task whose flags never take -h, so that `invoke TASK -h` is always its help."""

    def arg_opts(self, name, default, taken_names):
        return super().arg_opts(name, default, taken_names | {"h"})


task = functools.partial(invoke.task, klass=Task)


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


def settings(
    c,
    base: str = "auto",
    no_cache: bool = False,
    cache_from: str | None = None,
    jobs=None,
    cache_index: str | None = None,
    cache_key: str | None = None,
):
    """Build settings from invoke config (invoke.yaml / INVOKE_HUBFORGE_*) and flags."""
    from hubforge.errors import HubforgeError
    from hubforge.imagebuild.builder import Settings
    from hubforge.imagebuild.targets import BASE_MODES

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
        no_cache=no_cache,
        cache_from=cache_from,
        cache_index=Path(cache_index).expanduser() if cache_index else None,
        cache_key=Path(cache_key).expanduser() if cache_key else None,
        jobs=validate_jobs(jobs if jobs is not None else cfg.get("build_jobs", 0)),
    )


def validate_jobs(value) -> int:
    from hubforge.errors import HubforgeError

    try:
        jobs = int(value)
    except (TypeError, ValueError):
        jobs = -1
    if jobs < 0:
        raise HubforgeError(f"--jobs={value!r} is not valid; use a whole number, 0 for one per core (at most 4)")
    return jobs


@task(
    help={
        "target": (
            "one of base, hub, lab, gpu-probe, registry, backup, monitoring, idp (default: all but idp, the tests' "
            "OpenID Connect provider)"
        ),
        "flavor": "lab flavour, e.g. datascience (default: the lean lab)",
        "base": "auto | pull | bootstrap: where the Debian base comes from (default auto)",
        "plan": "print the graph, keys and what would rebuild and why; build nothing",
        "verbose": "stream the full build log",
        "no_cache": "rebuild the selected targets from scratch: no layer cache, existing keys ignored",
        "cache_from": (
            "REGISTRY/NAMESPACE: pull a key's image from there instead of building it, by the digest --cache-index "
            "names"
        ),
        "cache_index": (
            "FILE: a release's cache-index-VERSION.json (needed with --cache-from); with --check, the pulled image is "
            "compared with a clean build"
        ),
        "cache_key": "PUBLIC-KEY.pem: the release's key; the cache index counts only with its valid FILE.sig beside it",
        "jobs": "targets built at once (default 0: one per core, at most 4; hubforge.build_jobs in invoke.yaml)",
        "check": "TARGET: build it twice from clean and compare; name the files that differ and exit 1 if any do",
    }
)
@user_errors
def build(
    c,
    target=None,
    flavor=None,
    base="auto",
    plan=False,
    verbose=False,
    no_cache=False,
    cache_from=None,
    jobs=None,
    check=None,
    cache_index=None,
    cache_key=None,
):
    """Build the images whose content key is not yet in the local image store."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    app.configure_logging(verbose)
    if check is not None:
        if target not in (None, check):
            raise HubforgeError(f"--check {check} and --target {target} name different targets; give one")
        app.check(settings(c, base, no_cache, cache_from, jobs, cache_index, cache_key), check, flavor, verbose)
        return
    app.build(settings(c, base, no_cache, cache_from, jobs, cache_index, cache_key), target, flavor, plan, verbose)


@task(
    help={
        "target": "lock only this target (hub, proxy, lab, lab-datascience, gpu-probe, registry, backup, monitoring, "
        "idp)",
        "only": "python | apt | native: lock only one kind",
        "base": "auto | pull | bootstrap, for resolving Debian packages",
    }
)
@user_errors
def lock(c, target=None, only=None, base="auto"):
    """Regenerate the lock files (requirements.lock with hashes, apt.lock, native.lock) from the .in files and
    yarn.lock."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    if only not in (None, "python", "apt", "native"):
        raise HubforgeError(f"--only={only!r} is not valid; use python, apt or native")
    app.configure_logging(False)
    app.lock(settings(c, base), target, only)


@task(
    help={
        "keep": "how many superseded images to keep per repository (default 0)",
        "wheels": "also empty the host caches of wheels, .debs and node_modules",
        "dry_run": "print what would be removed",
    }
)
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
    """Check the Docker daemon, Compose v2, disk space, bootstrap prerequisites, Chromium and the test registry."""
    from hubforge import app

    if not app.report_doctor(settings(c)):
        raise Exit("some checks failed: run `invoke setup` (as root on Debian/Ubuntu) or apply the fixes above", code=1)


@task
@user_errors
def setup(c):
    """Install and start what doctor finds missing (Debian/Ubuntu, as root)."""
    from hubforge import app

    app.run_setup(settings(c))


def stack_options(c, project=None, https_port=None, http_port=None, gpu=None, bind=None, engine=None, monitoring=False):
    """Stack options from flags and invoke config (hubforge.stack_dir, hubforge.project, hubforge.engine).
    Without --engine, a stack that is already up keeps the engine it was started with."""
    from hubforge.deploy import (
        StackOptions,
        recorded_engine,
        validate_engine,
        validate_port,
        validate_project,
        validate_routing_mesh,
    )
    from hubforge.errors import HubforgeError

    cfg = c.config.get("hubforge", {})
    project = validate_project(project or cfg.get("project", "hubforge"))
    if gpu is not None and gpu not in ("auto", "on", "off"):
        raise HubforgeError(f"--gpu={gpu!r} is not valid; use auto, on or off")
    stack_dir = Path(os.path.expanduser(cfg.get("stack_dir", "~/.config/hubforge")))
    engine = validate_engine(engine or recorded_engine(stack_dir / project) or cfg.get("engine", "compose"))
    return StackOptions(
        project=project,
        run_dir=stack_dir / project,
        engine=engine,
        https_port=validate_port("--port", https_port if https_port is not None else cfg.get("https_port", 443)),
        http_port=validate_port("--http-port", http_port if http_port is not None else cfg.get("http_port", 80)),
        bind=bind or cfg.get("bind", "0.0.0.0"),
        gpu=gpu,
        docker_socket=cfg.get("docker_socket", "/var/run/docker.sock"),
        registry_port=validate_port("hubforge.swarm_registry_port", cfg.get("swarm_registry_port", 5000)),
        routing_mesh=validate_routing_mesh(str(cfg.get("swarm_routing_mesh", "auto"))),
        monitoring=monitoring,
    )


@task(
    help={
        "gpu": "auto | on | off: give the labs the host's GPUs (default: ENABLE_GPU_SUPPORT in .env, else auto)",
        "port": "host port for HTTPS (default 443)",
        "http_port": "host port that redirects to HTTPS (default 80)",
        "project": "Compose project name (default hubforge); each project is a separate hub",
        "bind": "host address to publish on (default 0.0.0.0)",
        "engine": (
            "compose (one host, the default) or swarm (a Docker Swarm, from a manager node); default: hubforge.engine "
            "in invoke.yaml"
        ),
        "monitoring": (
            "add Prometheus, Alertmanager and node-exporter, with hubforge's alert rules, for this run (default: "
            "MONITORING in .env, else off)"
        ),
    }
)
@user_errors
def up(c, gpu=None, port=None, http_port=None, project=None, bind=None, engine=None, monitoring=False):
    """Build what is missing, then start the hub (HTTPS) and wait until it is healthy."""
    from hubforge import app

    app.configure_logging(False)
    app.up(settings(c), stack_options(c, project, port, http_port, gpu, bind, engine, monitoring))


@task(
    help={
        "volumes": "also delete the stack's volumes: hub database, certificates, shared volume (asks first)",
        "user_volumes": "with --volumes: also delete every user's home, workspace and cache volumes",
        "yes": "do not ask for confirmation",
        "project": "Compose project name (default hubforge)",
    }
)
@user_errors
def down(c, volumes=False, user_volumes=False, yes=False, project=None):
    """Stop and remove the stack and its user servers; volumes stay unless --volumes."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    if user_volumes and not volumes:
        raise HubforgeError("--user-volumes only goes with --volumes")
    app.down(settings(c), stack_options(c, project), volumes, user_volumes, yes)


@task(help={"json": "print machine-readable JSON", "project": "Compose project name (default hubforge)"})
@user_errors
def status(c, json=False, project=None):
    """Services and health, the URL, the GPU decision and probe result, and running user servers."""
    from hubforge import app

    app.status(settings(c), stack_options(c, project), json)


@task(
    positional=["service"],
    help={
        "service": "hub, or a user's name for their lab (default: the whole stack)",
        "follow": "keep printing new lines",
        "tail": "how many lines to show first (default 200)",
        "project": "Compose project name (default hubforge)",
    },
)
@user_errors
def logs(c, service=None, follow=False, tail=200, project=None):
    """Logs of the stack, of one service (hub), or of one user's lab (by user name)."""
    from hubforge import app

    app.logs(settings(c), stack_options(c, project), service, follow, int(tail))


@task(
    positional=["action", "file"],
    help={
        "action": "export (write every group's policy as YAML) or import (set the policies in FILE)",
        "file": "the YAML file (export: default the terminal)",
        "project": "Compose project name (default hubforge)",
    },
)
@user_errors
def policies(c, action, file=None, project=None):
    """Group policies as YAML, to keep them in git: `invoke policies export [FILE]`, `invoke policies import FILE`."""
    from hubforge import app

    app.policies(settings(c), stack_options(c, project), action, file)


def restic_environment() -> dict[str, str]:
    """restic's credentials for a remote repository (s3:, rest:), from this environment: the only ones passed on."""
    from hubforge.backup.plan import REMOTE_ENVIRONMENT

    return {name: os.environ[name] for name in REMOTE_ENVIRONMENT if os.environ.get(name)}


@task(
    help={
        "list": "list the project's snapshots in the repository instead of making one",
        "project": "Compose project name (default hubforge)",
    }
)
@user_errors
def backup(c, list=False, project=None):
    """Back up the whole stack while it runs (the hub's database, the settings, every user's volumes; on Swarm, on
    every node) into the restic repository of BACKUP_REPOSITORY, with progress; `--list` lists the backups."""
    from hubforge import app

    app.configure_logging(False)
    app.backup(settings(c), stack_options(c, project), list, restic_environment())


@task(
    positional=["snapshot"],
    help={
        "snapshot": "a backup's id or one of its snapshots' (or the start of it, as `invoke backup --list` shows it), "
        "or latest",
        "user": "restore only this user's volumes, while everyone else keeps working (their lab is stopped first)",
        "volume": "with --user: only this volume (home, workspace or cache)",
        "force": "restore the whole stack even though it runs: stop it first",
        "project": "Compose project name (default hubforge)",
    },
)
@user_errors
def restore(c, snapshot, user=None, volume=None, force=False, project=None):
    """Bring the whole stack back from a snapshot (volumes with their owners and modes, the hub's database, the
    settings), here or on a new machine, then `invoke up`; or, with --user, one user's volumes."""
    from hubforge import app

    app.configure_logging(False)
    app.restore(settings(c), stack_options(c, project), snapshot, user, volume, force, restic_environment())


@task(
    help={
        "to": "a released version X.Y.Z, pulled from --registry (default: what this checkout builds)",
        "registry": "with --to: the registry the release went to (default docker.io, i.e. Docker Hub)",
        "namespace": "with --to: its account or organisation (default hubforge)",
        "key": "with --to: the release's public key (PEM); the signed SBOM and provenance of every image are checked",
        "project": "Compose project name (default hubforge)",
    }
)
@user_errors
def upgrade(c, to=None, registry="docker.io", namespace="hubforge", key=None, project=None):
    """Move a running stack to a release (--to) or to this checkout: back up, get the images by digest, migrate the
    hub's database, recreate the hub with labs running, then a health gate (healthy, metrics, a canary lab); a failed
    gate rolls back by itself."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    if to is None and (key or registry != "docker.io" or namespace != "hubforge"):
        raise HubforgeError("--registry, --namespace and --key go with --to X.Y.Z (a release)")
    app.configure_logging(False)
    key_path = Path(key) if key else None
    app.upgrade(settings(c), stack_options(c, project), to, registry, namespace, key_path, restic_environment())


@task(help={"project": "Compose project name (default hubforge)"})
@user_errors
def rollback(c, project=None):
    """Undo the last `invoke upgrade`: the previous images, and the hub's database of the snapshot taken before it
    (labs keep running)."""
    from hubforge import app

    app.configure_logging(False)
    app.rollback(settings(c), stack_options(c, project), restic_environment())


PYTEST_BROWSER_ARGS = ["--screenshot", "only-on-failure", "--tracing", "retain-on-failure", "--output", "test-results"]


def pytest_tier(c, paths: list[str], extra: list[str]) -> int:
    """Run pytest on `paths`; its exit code (5: no test matched the selection)."""
    argv = [sys.executable, "-m", "pytest", *paths, *extra]
    return c.run(" ".join(argv), warn=True, pty=False, env={"TESTCONTAINERS_RYUK_DISABLED": "true"}).exited


def pytest(c, paths: list[str], extra: list[str]) -> None:
    """Run pytest on `paths`; a failure ends the task with pytest's exit code."""
    code = pytest_tier(c, paths, extra)
    if code != 0:
        raise Exit(f"tests failed: {' '.join(paths)} (exit {code})", code=code)


class Tiers:
    """`invoke test`'s tiers, each run whatever the one before gave, and reported together at the end."""

    def __init__(self, c, selection: list[str]) -> None:
        self.c, self.selection, self.results = c, selection, []

    def run(self, name: str, paths: list[str], extra: list[str] = ()) -> None:
        started = time.monotonic()
        code = pytest_tier(self.c, paths, [*extra, *self.selection])
        # 5: nothing matched -k; a failure only when nothing was selected on purpose
        self.results.append(
            (
                name,
                "passed" if code == 0 or (code == 5 and self.selection) else f"failed (exit {code})",
                time.monotonic() - started,
            )
        )

    def command(self, name: str, *commands: list[str]) -> None:
        """A tier that is not pytest (the linter, the docs): passed when every command exits 0."""
        started = time.monotonic()
        codes = [self.c.run(" ".join(argv), warn=True, pty=False).exited for argv in commands]
        failed = [code for code in codes if code != 0]
        self.results.append(
            (name, "passed" if not failed else f"failed (exit {failed[0]})", time.monotonic() - started)
        )

    def skip(self, name: str, why: str) -> None:
        self.results.append((name, f"not run: {why}", 0.0))

    def report(self) -> None:
        print("\ninvoke test, by tier:")
        for name, result, took in self.results:
            print(f"  {name:<16} {result:<40} {took / 60:5.1f} min")
        failed = [name for name, result, _ in self.results if result != "passed"]
        if failed:
            raise Exit(f"tests failed in: {', '.join(failed)}", code=1)


LINT = [[sys.executable, "-m", "ruff", "check", "."], [sys.executable, "-m", "ruff", "format", "--check", "."]]
DOCS_BUILD = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html"]


@task
def docs(c):
    """Build the documentation site (Sphinx, MyST, the PyData theme) into docs/_build/html, warnings as errors; the
    task reference is generated from tasks.py on the way."""
    result = c.run(" ".join(DOCS_BUILD), warn=True, pty=False)
    if result.exited != 0:
        raise Exit(f"the docs did not build (exit {result.exited}): fix the warnings above", code=result.exited)
    print(f"docs: {ROOT / 'docs/_build/html/index.html'}")


@task(
    help={
        "quick": "unit tests, lint (ruff) and the docs build only (no Docker, no browser)",
        "k": "only tests matching this pytest expression",
    }
)
@user_errors
def test(c, quick=False, k=None):
    """Run every suite: unit, the lab extension's own, images, integration and e2e (the README's test command). Each
    tier runs whatever the one before gave; the result of each is reported at the end."""
    from hubforge import app
    from hubforge import doctor as checks
    from hubforge.errors import HubforgeError

    cfg = settings(c)
    tiers = Tiers(c, ["-k", repr(k)] if k else [])
    tiers.run("unit", ["tests/unit"])
    tiers.command("lint", *LINT)
    tiers.command("docs", DOCS_BUILD)
    if quick:
        tiers.report()
        return
    tiers.run("lab extension", ["images/lab/hubforge-notify/tests"])
    try:  # the later tiers need the daemon and the images: when these fail, say so and report the rest
        checks.ensure(cfg.cache_dir, {"docker", "compose", "chromium", "registry"}, app.say)
        app.build(cfg, None, None, False, False)
        app.build(cfg, "lab", "datascience", False, False)  # the image tests cover the flavour too
        app.build(cfg, "idp", None, False, False)  # the OpenID Connect provider the sign-in tests use
    except HubforgeError as exc:
        for name in ("images+integration", "e2e"):
            tiers.skip(name, f"the build failed: {exc}"[:120])
        tiers.report()
        return
    tiers.run("images+integration", ["tests/images", "tests/integration"])
    tiers.run("e2e", ["tests/e2e"], PYTEST_BROWSER_ARGS)
    tiers.report()


@task(
    help={
        "k": "only flows matching this pytest expression",
        "headed": "show the browser (needs a display)",
        "keep": "leave the stacks up after the run and print their URLs",
        "screenshots": "also regenerate the README screenshots into this folder (e.g. docs/img)",
    }
)
@user_errors
def e2e(c, k=None, headed=False, keep=False, screenshots=None):
    """Browser flows against live stacks (Playwright); failures leave screenshots and traces in test-results/."""
    from hubforge import app
    from hubforge import doctor as checks

    cfg = settings(c)
    checks.ensure(cfg.cache_dir, {"docker", "compose", "chromium"}, app.say)
    app.build(cfg, None, None, False, False)
    app.build(cfg, "idp", None, False, False)  # the OpenID Connect provider of the sign-in flow
    extra = list(PYTEST_BROWSER_ARGS)
    extra += ["-k", repr(k)] if k else []
    extra += ["--headed"] if headed else []
    extra += ["--keep-stack"] if keep else []
    extra += ["--screenshots", str(Path(screenshots).resolve())] if screenshots else []
    pytest(c, ["tests/e2e"], extra)


@task(
    help={
        "version": "X.Y.Z or X.Y.Z-pre (semver); stable versions also get X.Y, X and latest",
        "registry": "registry host (default docker.io, i.e. Docker Hub)",
        "namespace": "account or organisation (default: hubforge)",
        "push": "push for real; without it this is a dry run that prints every tag",
        "dry_run": "print every tag and the image behind it, push nothing (the default)",
        "flavor": "also release this lab flavour (repeatable)",
        "allow_dirty": "release from a dirty tree or an untagged HEAD",
        "verbose": "log every step (secrets stay hidden)",
        "signing_key": (
            "ECDSA P-256 PEM key that signs the attached SBOM and provenance (default $HUBFORGE_SIGNING_KEY; "
            "its password, if any, in $HUBFORGE_SIGNING_KEY_PASSWORD)"
        ),
    },
    iterable=["flavor"],
)
@user_errors
def release(
    c,
    version,
    registry="docker.io",
    namespace="hubforge",
    push=False,
    dry_run=False,
    flavor=None,
    allow_dirty=False,
    verbose=False,
    signing_key=None,
):
    """Tag, push and verify versioned images, with a CycloneDX SBOM and provenance for each."""
    from hubforge import app
    from hubforge.errors import HubforgeError

    if push and dry_run:
        raise HubforgeError("--push and --dry-run contradict each other; pass one")

    app.configure_logging(verbose)
    user, token = os.environ.get("DOCKERHUB_USERNAME", ""), os.environ.get("DOCKERHUB_TOKEN", "")
    credentials = (user, token) if user and token else None  # else the registry's own `docker login`
    key = signing_key or os.environ.get("HUBFORGE_SIGNING_KEY", "")
    signing = (Path(key), os.environ.get("HUBFORGE_SIGNING_KEY_PASSWORD") or None) if key else None
    app.release(settings(c), version, registry, namespace, push, list(flavor or []), allow_dirty, credentials, signing)


@task(help={"output": "where to write the CycloneDX JSON (default dist/<image>-<version>.cdx.json)"})
@user_errors
def sbom(c, image, output=None):
    """Write a CycloneDX SBOM (Python and Debian packages) of any local image."""
    from hubforge import app

    app.sbom(settings(c), image, Path(output) if output else None)


@task(
    help={
        "image": "a released image: REGISTRY/NAMESPACE/NAME:TAG or ...@sha256:DIGEST",
        "key": "the release's public key (PEM), e.g. hubforge.pub",
    }
)
@user_errors
def verify(c, image, key):
    """Check a released image's attached SBOM and provenance: signed by KEY, about the digest IMAGE resolves to."""
    from hubforge import app

    user, token = os.environ.get("DOCKERHUB_USERNAME", ""), os.environ.get("DOCKERHUB_TOKEN", "")
    app.verify(image, Path(key), (user, token) if user and token else None)
