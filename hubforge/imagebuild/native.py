"""Native binaries of the lab extension's yarn install, pinned by checksum beside yarn.lock.

Yarn 3 (jlpm) writes no checksum for an optional platform package (rspack's `@rspack/binding-<os>-<cpu>-<libc>`),
even when it fetched one, and installs whichever fits the host unchecked: a native binary that then runs on the host.
native.lock pins each such package that a build host can install, by the npm registry's integrity of its tarball
(provenance: re-checkable against the registry) and by the sha256 of its installed files (checked after every
`jlpm install`, before anything runs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import HubforgeError

NATIVE_LOCK = "native.lock"
# The hosts that build images: node's os and cpu names, as yarn.lock's `conditions` use them.
BUILD_HOSTS = tuple((os_, cpu) for os_ in ("linux", "darwin") for cpu in ("x64", "arm64"))
_LINE = re.compile(r"(?P<resolution>\S+@npm:\S+) (?P<integrity>sha512-[A-Za-z0-9+/]{86}==) (?P<tree>[0-9a-f]{64})")


@dataclass(frozen=True)
class NativePin:
    resolution: str  # as in yarn.lock: "@rspack/binding-linux-x64-gnu@npm:2.2.9"
    integrity: str  # the npm registry's sha512 of the tarball
    tree: str  # tree_digest() of the unpacked package

    @property
    def name(self) -> str:
        return self.resolution.rsplit("@npm:", 1)[0]

    @property
    def version(self) -> str:
        return self.resolution.rsplit("@npm:", 1)[1]


def yarn_entries(text: str) -> dict[str, dict[str, str]]:
    """Yarn 2+ lock entries by resolution, with their top-level fields (a small reader for this flat YAML)."""
    entries: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^  (\w+): (.+)$", block, re.M))
        if "resolution" in fields:
            entries[fields["resolution"].strip('"')] = fields
    return entries


def unchecksummed(yarn_lock: str) -> dict[str, dict[str, str]]:
    """The fetched packages (linkType hard) that yarn.lock holds without a checksum."""
    return {
        name: fields
        for name, fields in yarn_entries(yarn_lock).items()
        if fields.get("linkType") == "hard" and "checksum" not in fields
    }


def installable_on_a_build_host(conditions: str | None) -> bool:
    """Whether yarn may install a package with these `conditions` (`os=linux & cpu=x64 & libc=glibc`) on a build
    host."""
    wanted = dict(part.strip().split("=", 1) for part in (conditions or "").split("&") if "=" in part)
    return any(wanted.get("os", os_) == os_ and wanted.get("cpu", cpu) == cpu for os_, cpu in BUILD_HOSTS)


def parse_native_lock(text: str, source: str = NATIVE_LOCK) -> dict[str, NativePin]:
    pins: dict[str, NativePin] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if not match:
            raise HubforgeError(
                f"{source}:{number}: expected 'name@npm:version sha512-... sha256-of-files', got {line!r}; run `invoke "
                "lock`"
            )
        pins[match["resolution"]] = NativePin(match["resolution"], match["integrity"], match["tree"])
    return pins


def tree_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """sha256 over each file's relative POSIX path and bytes, length-prefixed, in path order."""
    digest = hashlib.sha256()
    for rel, data in sorted(files):
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def installed_files(package: Path) -> Iterable[tuple[str, bytes]]:
    for folder, dirs, names in os.walk(package):
        dirs[:] = [d for d in dirs if d != "node_modules"]  # a nested dependency is checked as its own package
        for name in names:
            path = Path(folder) / name
            yield path.relative_to(package).as_posix(), path.read_bytes()


def tarball_files(tarball: Path) -> Iterable[tuple[str, bytes]]:
    """The regular files of an npm tarball, relative to its top folder (`package/`), as yarn installs them."""
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                yield member.name.split("/", 1)[1], handle.read()


def installed_copies(node_modules: Path, name: str) -> list[Path]:
    """Every folder of `name` under node_modules, hoisted or nested."""
    return sorted(p for p in [node_modules / name, *node_modules.glob(f"**/node_modules/{name}")] if p.is_dir())


def check_installed(source: Path) -> None:
    """After `jlpm install`: every installed package that yarn.lock holds without a checksum is pinned in native.lock
    and its files are the pinned ones. Raises one line naming the folder otherwise."""
    pins = parse_native_lock(_read(source / NATIVE_LOCK), f"{source.name}/{NATIVE_LOCK}")
    for resolution in unchecksummed((source / "yarn.lock").read_text()):
        name, version = resolution.rsplit("@npm:", 1)
        for copy in installed_copies(source / "node_modules", name):
            if json.loads((copy / "package.json").read_text()).get("version") != version:
                continue
            where = copy.relative_to(source)
            pin = pins.get(resolution)
            if pin is None:
                raise HubforgeError(
                    f"{where} ({version}) has no checksum in yarn.lock and no pin in {NATIVE_LOCK}; "
                    "run `invoke lock --only native`"
                )
            if tree_digest(installed_files(copy)) != pin.tree:
                raise HubforgeError(
                    f"{where} is not the pinned {resolution} ({NATIVE_LOCK}); remove {source.name}/node_modules "
                    "and the yarn cache (~/.cache/hubforge/labext/yarn-cache), then build again"
                )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def npm_integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def pin_from_registry(resolution: str, npm: Callable[[list[str], Path], str]) -> NativePin:
    """Fetch the package's tarball with npm, check it against the registry's integrity, and hash its files."""
    name, version = resolution.rsplit("@npm:", 1)
    with tempfile.TemporaryDirectory(prefix="hubforge-native-") as tmp:
        integrity = json.loads(npm(["view", "--json", f"{name}@{version}", "dist.integrity"], Path(tmp)))
        packed = json.loads(npm(["pack", "--json", "--pack-destination", tmp, f"{name}@{version}"], Path(tmp)))
        tarball = Path(tmp) / packed[0]["filename"]
        if npm_integrity(tarball.read_bytes()) != integrity:
            raise HubforgeError(
                f"{resolution}: the tarball npm fetched is not the one the registry names ({integrity}); try again"
            )
        return NativePin(resolution, integrity, tree_digest(tarball_files(tarball)))


def format_native_lock(pins: Mapping[str, NativePin]) -> str:
    head = (
        "# Native binaries that yarn.lock holds without a checksum (yarn 3 writes none for optional platform "
        "packages)\n"
        "# and that a build host (linux or darwin, x64 or arm64) can install: the registry's sha512 of the tarball, "
        "and\n"
        "# the sha256 of its files (hubforge.imagebuild.native.tree_digest), checked after every `jlpm install`.\n"
        "# Written by `invoke lock --only native`.\n"
    )
    return head + "".join(f"{p.resolution} {p.integrity} {p.tree}\n" for _, p in sorted(pins.items()))


def lock_native(source: Path, say: Callable[[str], None]) -> None:
    """Pin every checksum-less package of yarn.lock that a build host can install (network: the npm registry)."""
    wanted = sorted(
        r
        for r, fields in unchecksummed((source / "yarn.lock").read_text()).items()
        if installable_on_a_build_host(fields.get("conditions"))
    )

    def npm(argv: list[str], cwd: Path) -> str:
        return proc.run(
            ["npm", *argv], cwd=str(cwd), what=f"npm {argv[0]} {argv[-2] if argv[0] == 'view' else argv[-1]}"
        ).stdout

    (source / NATIVE_LOCK).write_text(format_native_lock({r: pin_from_registry(r, npm) for r in wanted}))
    say(f"  wrote {source.name}/{NATIVE_LOCK} ({len(wanted)} packages)")
