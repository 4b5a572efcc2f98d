"""Python wheels: lock file -> content-addressed host cache -> build context, installed offline."""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import shutil
import sys
import tempfile
import time
import venv
import zipfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from .. import proc
from ..errors import HubforgeError
from . import labext
from .keys import digest_bytes
from .lockfiles import PythonPin, normalize, parse_python_lock
from .targets import HOST_BUILD_LOCK, PYTHON_VERSION
from .verify import Verifier, file_sha256

log = logging.getLogger(__name__)

# What builds a locked sdist (its wheel is made in the image build, images/_shared/venv.j2): the legacy setup.py of
# onetimepass (images/hub/requirements.lock) needs setuptools. Pinned with hashes in images/_shared/host-build.lock.
SDIST_BACKENDS = ("setuptools",)


# A wheel for glibc 2.17 .. 2.36 runs on bookworm (glibc 2.36).
def platform_tags(arch: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]


@functools.cache
def supported_tags(arch: str) -> frozenset[Tag]:
    """Wheel tags that Debian bookworm's CPython 3.11 on `arch` can install."""
    version = tuple(int(p) for p in PYTHON_VERSION.split("."))
    platforms = platform_tags(arch)
    return frozenset(cpython_tags(version, platforms=platforms)) | frozenset(
        compatible_tags(version, "cp311", platforms)
    )


@dataclass(frozen=True)
class Distribution:
    """A file pip installs in the image: a wheel, or an sdist the image build turns into one (no network there)."""

    pin_name: str
    version: str
    path: Path
    sha256: str

    @property
    def is_sdist(self) -> bool:
        return not self.path.name.endswith(".whl")


class WheelCache:
    """Files from PyPI stored by their sha256. A stored file counts only while its bytes still have that sha256
    (checked whenever it is looked up). Nothing here builds an sdist: the image build does, with no network.

    `host_lock` (the text of images/_shared/host-build.lock) pins, with hashes, the build backends: the lab
    extension's, which host_environment() installs into a fresh virtual environment for each build (so no backend
    comes from an index unpinned, as pip's build isolation would fetch one, and none from a venv that lies about),
    and the sdists' (SDIST_BACKENDS), which the image build installs (sdist_backends())."""

    def __init__(
        self, root: Path, arch: str = "x86_64", verifier: Verifier | None = None, host_lock: str | None = None
    ) -> None:
        self.root = root
        self.arch = arch
        self.verifier = verifier or Verifier()
        self.host_lock = host_lock
        (root / "by-hash").mkdir(parents=True, exist_ok=True)

    def _stored(self, sha: str) -> Path | None:
        folder = self.root / "by-hash" / sha
        files = list(folder.iterdir()) if folder.is_dir() else []
        return files[0] if files and self.verifier.intact(files[0], sha) else None

    def _find(self, pin: PythonPin) -> Path | None:
        """A cached file for this pin whose hash the lock allows and that fits the image's platform."""
        candidates = [p for p in (self._stored(h) for h in sorted(pin.hashes)) if p]
        for path in candidates:
            if path.suffix == ".whl" and self._fits(path.name):
                return path
        for path in candidates:
            if not path.name.endswith(".whl"):
                return path
        return None

    def _fits(self, filename: str) -> bool:
        return bool(parse_wheel_filename(filename)[3] & supported_tags(self.arch))

    def fetch(self, pins: list[PythonPin], progress=None) -> None:
        """Download every pin that is not yet cached, verifying each file against the lock's hashes."""
        missing = [p for p in pins if self._find(p) is None]
        if not missing:
            return
        if progress:
            progress(f"downloading {len(missing)} Python distributions")
        with tempfile.TemporaryDirectory(prefix="hubforge-wheels-") as tmp:
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("".join(p.requirement() + "\n" for p in missing))
            argv = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
                str(Path(tmp) / "dl"),
                "--requirement",
                str(reqs),
                "--python-version",
                PYTHON_VERSION,
                "--implementation",
                "cp",
                "--abi",
                "cp311",
                "--abi",
                "abi3",
                "--abi",
                "none",
            ]
            for tag in platform_tags(self.arch):
                argv += ["--platform", tag]
            proc.run(argv, what="downloading Python wheels on the host (pip download)")
            allowed = {h for p in missing for h in p.hashes}
            for path in (Path(tmp) / "dl").iterdir():
                sha = file_sha256(path)
                if sha not in allowed:  # pip checked already; this guards the cache itself
                    raise HubforgeError(f"{path.name}: sha256 {sha} is not in the lock; run `invoke lock`")
                dest = self.root / "by-hash" / sha
                dest.mkdir(exist_ok=True)
                shutil.move(str(path), dest / path.name)
        still = [p.name for p in missing if self._find(p) is None]
        if still:
            raise HubforgeError(
                f"no distribution for {', '.join(still)} fits Python {PYTHON_VERSION} on {self.arch}; run `invoke lock`"
            )

    def distribution_for(self, pin: PythonPin) -> Distribution:
        """What the image installs for a pin: its wheel, or, when PyPI has only an sdist, the sdist itself. The sdist
        is never built here: its build code (a setup.py, an in-tree backend) would run on the host. The image build
        turns it into a wheel with no network and the locked backends (images/_shared/venv.j2, SDIST_BACKENDS)."""
        path = self._find(pin)
        if path is None:
            raise HubforgeError(f"{pin.name}=={pin.version} is not in the wheel cache; run `invoke build` with network")
        return Distribution(pin.name, pin.version, path, path.parent.name)

    def sdist_backends(self, progress=None) -> list[Distribution]:
        """The host build lock's wheels of SDIST_BACKENDS, for the image build to build the locked sdists with."""
        found = self.host_wheels(SDIST_BACKENDS, progress)
        missing = sorted(set(SDIST_BACKENDS) - {d.pin_name for d in found})
        if missing:
            raise HubforgeError(
                f"{HOST_BUILD_LOCK} pins no {', '.join(missing)}, which builds the locked sdists; "
                "add it to host-build.in and run `invoke lock`"
            )
        return found

    def host_wheels(self, names: Collection[str] | None = None, progress=None) -> list[Distribution]:
        """The host build lock's wheels (those of `names`, when given), fetched and checked; an sdist there is
        refused."""
        pins = [p for p in parse_python_lock(self.host_lock or "", HOST_BUILD_LOCK) if names is None or p.name in names]
        self.fetch(pins, progress)
        found = [self.distribution_for(pin) for pin in pins]
        sdists = [d.pin_name for d in found if d.is_sdist]
        if sdists:
            raise HubforgeError(
                f"{HOST_BUILD_LOCK}: {', '.join(sdists)} has no wheel; pin a version with a wheel and run `invoke lock`"
            )
        return found

    def host_lock_key(self) -> str:
        if self.host_lock is None:
            raise HubforgeError(
                "building on the host needs the host build lock (images/_shared/host-build.lock); run `invoke lock`"
            )
        return digest_bytes(self.host_lock.encode())

    @contextmanager
    def host_environment(self) -> Iterator[Path]:
        """A fresh virtual environment holding exactly the host build lock's wheels, each checked against its hash
        (cached by hash, staged through the verifier, installed by pip with --require-hashes and no index): yields its
        bin/."""
        self.host_lock_key()
        found = self.host_wheels()
        with tempfile.TemporaryDirectory(prefix="hubforge-host-build-") as tmp:
            env = Path(tmp) / "env"
            venv.create(env, with_pip=True)  # pip from this Python's own ensurepip, no index
            requirements = stage(found, Path(tmp) / "wheels", self.verifier)
            proc.run(
                [
                    str(env / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--no-index",
                    "--no-deps",
                    "--require-hashes",
                    "--only-binary",
                    ":all:",
                    "--disable-pip-version-check",
                    "--quiet",
                    "--find-links",
                    str(requirements.parent),
                    "--requirement",
                    str(requirements),
                ],
                what="installing the host build lock into a fresh venv",
            )
            yield env / "bin"


def package_files(source: Path) -> dict[str, bytes]:
    """The files of a source package folder, by POSIX path relative to it: exactly the files its key hashes
    (labext.source_files: build outputs such as build/, dist/, lib/ and __pycache__ are left out of both)."""
    return {rel: (source / rel).read_bytes() for rel in labext.source_files(source)}


def build_local_wheel(
    source: Path, name: str, version: str, dest: Path, epoch: int, files: Mapping[str, bytes] | None = None
) -> Path:
    """A reproducible pure-Python wheel of one source package folder (no build backend needed).

    Same bytes in, same wheel out: files are sorted and stamped with `epoch`. `files` (relative to `source`) are
    the bytes to pack, e.g. those checked against the key; by default the folder's package_files().
    """
    dist = normalize(name).replace("-", "_")
    stamp = max(epoch, 315532800)  # zip cannot store times before 1980
    date_time = time.gmtime(stamp)[:6]
    packed = package_files(source) if files is None else files
    # Ordered as Path objects sort (part by part), as wheels were packed before: the same bytes for the same files.
    entries: list[tuple[str, bytes]] = [
        (f"{source.name}/{rel}", packed[rel]) for rel in sorted(packed, key=lambda r: PurePosixPath(r).parts)
    ]
    info = f"{dist}-{version}.dist-info"
    entries.append((f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()))
    entries.append(
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: hubforge\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    )
    record_lines = []
    for arcname, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{arcname},sha256={digest},{len(data)}")
    record_lines.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record_lines) + "\n").encode()))
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in entries:
            entry = zipfile.ZipInfo(arcname, date_time=date_time)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return wheel


def stage(wheels: list[Distribution], dest: Path, verifier: Verifier | None = None) -> Path:
    """Put wheels in the build context, each checked against its hash there, with a requirements file pinning
    each to its exact file hash (pip, which installs them, runs from one of these wheels: it must be the locked one)."""
    dest.mkdir(parents=True, exist_ok=True)
    verifier = verifier or Verifier()
    lines = []
    for wheel in sorted(wheels, key=lambda w: w.pin_name):
        verifier.stage(wheel.path, dest / wheel.path.name, wheel.sha256)
        lines.append(f"{wheel.pin_name}=={wheel.version} --hash=sha256:{wheel.sha256}\n")
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(lines))
    return requirements


def local_wheel(
    source: Path, version: str, dest: Path, epoch: int, files: Mapping[str, bytes] | None = None
) -> Distribution:
    name = source.name.replace("_", "-")
    path = build_local_wheel(source, name, version, dest, epoch, files)
    return Distribution(normalize(name), version, path, digest_bytes(path.read_bytes()))


def file_wheel(path: Path) -> Distribution:
    """A wheel built elsewhere on the host (e.g. a lab extension), pinned to its exact bytes."""
    name, version, _build, _tags = parse_wheel_filename(path.name)
    return Distribution(normalize(str(name)), str(version), path, file_sha256(path))
