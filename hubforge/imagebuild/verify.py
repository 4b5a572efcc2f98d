"""Cached inputs checked where they are used: a file's sha256, hashed once per file identity."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from ..errors import HubforgeError

log = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Verifier:
    """The sha256 of files, remembered per file identity (device, inode, size, mtime_ns) for this process.

    The host cache is shared by every clone, so a file is checked when it is staged, not only when it was
    downloaded. Writing a file in place changes its mtime and replacing it changes its inode, so either is
    hashed again; a hard link shares its inode, so a context's link to a checked cache file costs nothing.
    The record is kept in memory only: one on disk would sit beside the files it vouches for, writable by
    whoever can change them (ctime is left out because every hard link changes it)."""

    def __init__(self) -> None:
        self.known: dict[tuple[int, int, int, int], str] = {}

    def sha256(self, path: Path) -> str:
        info = path.stat()
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if identity not in self.known:
            self.known[identity] = file_sha256(path)
        return self.known[identity]

    def intact(self, path: Path, expected: str) -> bool:
        """Whether the cached `path` exists with the sha256 its lock expects. A changed file is removed, with one
        line that names it, so that the caller fetches it again."""
        if not path.exists():
            return False
        found = self.sha256(path)
        if found == expected:
            return True
        log.warning("%s: sha256 %s does not match the lock (%s); removed it, fetching it again", path, found, expected)
        path.unlink()
        return False

    def stage(self, source: Path, target: Path, expected: str) -> None:
        """Put a checked cache file into a build context, and check what landed there: the build must see the
        bytes the lock names, even when the cache file changed since it was checked."""
        link_or_copy(source, target)
        found = self.sha256(target)
        if found != expected:
            target.unlink()
            raise HubforgeError(
                f"{source} changed while it was staged (sha256 {found}, the lock says {expected}); "
                f"something is writing to the cache: run the build again"
            )


def link_or_copy(source: Path, target: Path) -> None:
    """Put `source` at `target`: a hard link (same inode, so already checked), or a copy across file systems."""
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
