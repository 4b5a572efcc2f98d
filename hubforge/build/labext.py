"""JupyterLab extension wheels (images/lab/hubforge-notify): built on the host once per distinct source tree."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from .. import proc
from ..errors import HubforgeError

# Build outputs and caches, relative to the source root: never part of the key.
GENERATED = frozenset({"node_modules", "lib", "dist", "build", ".yarn/cache", ".yarn/unplugged",
                       ".yarn/install-state.gz", ".yarn/build-state.yml"})
GENERATED_ANYWHERE = frozenset({"node_modules", "__pycache__", ".pytest_cache"})
GENERATED_SUFFIXES = (".tsbuildinfo", ".pyc")
# Importable on the host -> `pip wheel --no-build-isolation` (seconds); otherwise pip fetches them per build.
BUILD_REQUIRES = ("hatchling", "hatch_jupyter_builder", "jupyter_builder")


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
        found += [(rel / f).as_posix() for f in files
                  if (rel / f).as_posix() not in skip and not f.endswith(GENERATED_SUFFIXES)]
    return sorted(found)


def source_key(source: Path) -> str:
    """sha256 over every source file's relative path and bytes (length-prefixed, so no two trees collide)."""
    digest = hashlib.sha256()
    for rel in source_files(source):
        data = (source / rel).read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _check_wheel(wheel: Path) -> None:
    """The wheel must carry the prebuilt frontend, or the lab would silently run without it."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if not any("/share/jupyter/labextensions/" in n and "/static/remoteEntry." in n for n in names):
        raise HubforgeError(f"{wheel.name} has no prebuilt labextension (share/jupyter/labextensions/*/static/remoteEntry.*.js)")


def build_wheel(source: Path, cache_root: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The wheel for `source` from cache_root/<key[:32]>/, built there first when missing.

    node_modules stays in `source` and the yarn cache in cache_root/yarn-cache, so a rebuild after an
    edit installs nothing new. Raises HubforgeError (one line plus the tool's stderr tail) on failure.
    """
    source = source.resolve()
    dest = cache_root / source_key(source)[:32]
    cached = sorted(dest.glob("*.whl"))
    if cached:
        return cached[0]
    # jlpm comes with this Python's jupyter-builder: find it (and let hatch-jupyter-builder find it) even
    # when the virtual environment was not activated, e.g. `.venv/bin/python -m invoke build`.
    path = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    if shutil.which("jlpm", path=path) is None:
        raise HubforgeError("jlpm is not installed (needed to build the lab extension): python -m pip install jupyter-builder")
    cache_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": path, "YARN_CACHE_FOLDER": str(cache_root / "yarn-cache")}
    if progress:
        progress(f"jlpm install in {source} (on the host)")
    proc.run(["jlpm", "install", "--immutable"], cwd=str(source), env=env, what=f"jlpm install for {source.name}")
    isolation = ["--no-build-isolation"] if all(importlib.util.find_spec(m) for m in BUILD_REQUIRES) else []
    work = Path(tempfile.mkdtemp(prefix="wheel-", dir=cache_root))
    try:
        if progress:
            progress(f"building the {source.name} wheel (TypeScript + labextension)")
        proc.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, str(source), "-w", str(work)],
                 cwd=str(source), env=env, what=f"pip wheel for {source.name}")
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
