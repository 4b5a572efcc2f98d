"""JupyterLab extension wheels (images/lab/hubforge-notify): built on the host once per distinct source tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from .. import proc
from ..errors import HubforgeError
from . import native

# Build outputs and caches, relative to the source root: never part of the key.
GENERATED = frozenset(
    {
        "node_modules",
        "lib",
        "dist",
        "build",
        ".yarn/cache",
        ".yarn/unplugged",
        ".yarn/install-state.gz",
        ".yarn/build-state.yml",
    }
)
GENERATED_ANYWHERE = frozenset({"node_modules", "__pycache__", ".pytest_cache"})
GENERATED_SUFFIXES = (".tsbuildinfo", ".pyc")


def _output_dir(source: Path) -> str | None:
    """The labextension output folder that package.json's jupyterlab.outputDir names, if any."""
    try:
        meta = json.loads((source / "package.json").read_text())
    except (OSError, ValueError):
        return None
    out = meta.get("jupyterlab", {}).get("outputDir")
    return Path(out).as_posix() if isinstance(out, str) else None


def source_files(source: Path) -> list[str]:
    """Sorted POSIX paths, relative to `source`, of every file that goes into the key."""
    skip = GENERATED | ({_output_dir(source)} - {None})
    found: list[str] = []
    for folder, dirs, files in os.walk(source):
        rel = Path(folder).relative_to(source)
        dirs[:] = [d for d in dirs if d not in GENERATED_ANYWHERE and (rel / d).as_posix() not in skip]
        found += [
            (rel / f).as_posix()
            for f in files
            if (rel / f).as_posix() not in skip and not f.endswith(GENERATED_SUFFIXES)
        ]
    return sorted(found)


def source_key(source: Path) -> str:
    """sha256 over every source file's relative path and bytes (length-prefixed, so no two trees collide)."""
    return native.tree_digest((rel, (source / rel).read_bytes()) for rel in source_files(source))


def _check_wheel(wheel: Path) -> None:
    """The wheel must carry the prebuilt frontend, or the lab would silently run without it."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if not any("/share/jupyter/labextensions/" in n and "/static/remoteEntry." in n for n in names):
        raise HubforgeError(
            f"{wheel.name} has no prebuilt labextension (share/jupyter/labextensions/*/static/remoteEntry.*.js)"
        )


def jlpm_env(cache_root: Path, path: str) -> dict[str, str]:
    """The environment of jlpm (and of the build that calls it again): the yarn cache under cache_root, and no
    dependency's install script, whatever a .yarnrc.yml says (the extension's says so too)."""
    return {
        **os.environ,
        "PATH": path,
        "YARN_CACHE_FOLDER": str(cache_root / "yarn-cache"),
        "YARN_ENABLE_SCRIPTS": "false",
    }


def build_wheel(
    source: Path,
    cache_root: Path,
    host_env: Callable[[], AbstractContextManager[Path]],
    host_key: str,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The wheel for `source` from cache_root/<key[:32]>/, built there first when missing.

    The key covers the sources and `host_key` (the host build lock's digest). `host_env()` gives the bin/ of a fresh
    venv holding that lock's backends and jlpm, checked by hash: pip builds with them, without isolation or an index.
    node_modules stays in `source` and the yarn cache in cache_root/yarn-cache, so a rebuild after an edit installs
    nothing new; native binaries that yarn.lock does not checksum are checked against native.lock before anything runs.
    Raises HubforgeError (one line plus the tool's stderr tail) on failure.
    """
    source = source.resolve()
    dest = cache_root / hashlib.sha256(f"{source_key(source)}\0{host_key}".encode()).hexdigest()[:32]
    cached = sorted(dest.glob("*.whl"))
    if cached:
        return cached[0]
    cache_root.mkdir(parents=True, exist_ok=True)
    with host_env() as bin_dir:
        env = jlpm_env(cache_root, os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
        if progress:
            progress(f"jlpm install in {source} (on the host, no install scripts)")
        proc.run(
            [str(bin_dir / "jlpm"), "install", "--immutable"],
            cwd=str(source),
            env=env,
            what=f"jlpm install for {source.name}",
        )
        native.check_installed(source)
        return _pip_wheel(source, dest, bin_dir / "python", env, progress)


def _pip_wheel(
    source: Path, dest: Path, python: Path, env: dict[str, str], progress: Callable[[str], None] | None
) -> Path:
    work = Path(tempfile.mkdtemp(prefix="wheel-", dir=dest.parent))
    try:
        if progress:
            progress(f"building the {source.name} wheel (TypeScript + labextension)")
        proc.run(
            [
                str(python),
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--disable-pip-version-check",
                str(source),
                "-w",
                str(work),
            ],
            cwd=str(source),
            env=env,
            what=f"pip wheel for {source.name}",
        )
        wheels = list(work.glob("*.whl"))
        if len(wheels) != 1:
            raise HubforgeError(f"pip wheel for {source.name} made {len(wheels)} wheels, expected 1")
        _check_wheel(wheels[0])
        dest.mkdir(parents=True, exist_ok=True)
        final = dest / wheels[0].name
        os.replace(wheels[0], final)  # same file system: a reader never sees half a wheel
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
