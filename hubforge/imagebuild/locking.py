"""`invoke lock`: resolve each image's Python and Debian inputs into lock files with hashes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .. import proc
from ..docker_io import Docker
from . import debs
from .lockfiles import format_apt_lock, requested_packages
from .targets import PYTHON_VERSION, BaseSpec

log = logging.getLogger(__name__)


def source_of(lock: str) -> str:
    """images/lab/datascience.lock <- images/lab/datascience.in (apt.lock <- apt.in likewise)."""
    return lock.rsplit(".", 1)[0] + ".in"


def uv_compile_argv(uv: str, source: Path, output: Path, arch: str | None) -> list[str]:
    """For an image's Python and arch; with arch None for any platform (the host build lock, run on the host)."""
    platform = ["--python-platform", f"{arch}-manylinux_2_28"] if arch else ["--universal"]
    return [
        uv,
        "pip",
        "compile",
        str(source),
        "--output-file",
        str(output),
        "--generate-hashes",
        "--quiet",
        "--python-version",
        PYTHON_VERSION,
        *platform,
        "--no-header",
        "--annotation-style",
        "line",
        "--custom-compile-command",
        "invoke lock",
    ]


def lock_python(root: Path, lock: str, arch: str | None, say: Callable[[str], None]) -> None:
    from uv import find_uv_bin

    source = root / source_of(lock)
    proc.run(
        uv_compile_argv(find_uv_bin(), source, root / lock, arch),
        cwd=str(source.parent),
        what=f"locking {source.relative_to(root)} (uv pip compile)",
    )
    say(f"  wrote {lock}")


def lock_apt(root: Path, apt_lock: str, docker: Docker, base_ref: str, say: Callable[[str], None]) -> None:
    """Resolve the packages of `<name>.in` (with dependencies) against the base into `<name>.lock`."""
    packages = requested_packages(root / source_of(apt_lock))
    output = docker.run_output(base_ref, ["sh", "-c", debs.resolve_script(packages)])
    pins = debs.parse_resolution(output)
    (root / apt_lock).write_text(format_apt_lock(pins, packages))
    say(f"  wrote {apt_lock} ({len(pins)} packages)")


def lock_base(root: Path, lock: str, spec: BaseSpec, scratch: Path, say: Callable[[str], None]) -> None:
    """Resolve what the bootstrap recipe installs today (mmdebstrap, trusting only the pinned keyring) into the
    base's apt.lock: the bootstrap then installs exactly these .debs, and the base key hashes them."""
    from . import base

    pins = base.resolve(spec, root, scratch)
    (root / lock).write_text(format_apt_lock(pins, base.requested(spec, root)))
    say(f"  wrote {lock} ({len(pins)} packages, from {spec.mirror})")
