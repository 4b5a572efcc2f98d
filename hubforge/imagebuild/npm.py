"""Node packages built on the host: package-lock.json -> node_modules cached by the lock's hash."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .. import proc
from .keys import digest_bytes


def install(npm_dir: Path, cache_root: Path, progress=None) -> Path:
    """`npm ci --omit=dev` on the host, once per distinct lock; returns the cached node_modules folder."""
    lock = (npm_dir / "package-lock.json").read_bytes() + (npm_dir / "package.json").read_bytes()
    dest = cache_root / digest_bytes(lock)[:32]
    if (dest / "node_modules").is_dir():
        return dest / "node_modules"
    if progress:
        progress(f"npm ci in {npm_dir} (on the host)")
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="npm-", dir=cache_root))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(npm_dir / name, work / name)
        proc.run(
            ["npm", "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=str(work),
            what=f"npm ci for {npm_dir}",
        )
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest / "node_modules"
