"""Lock files: parsing the Python (pip --require-hashes) and Debian package locks."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import HubforgeError

_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;]+)")
_HASH = re.compile(r"--hash=sha256:(?P<hash>[0-9a-f]{64})")


# A Debian package name (Debian Policy 5.6.1). The names of apt.in and of the base recipe reach shell strings
# (the lock's resolve script, mmdebstrap's hooks), so nothing else may pass.
DEB_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
NOT_A_PACKAGE = "is not a Debian package name (lower-case letters, digits, '+', '-' and '.')"


def check_package_name(name: str, where: str) -> str:
    """`name` when it is a Debian package name; else one line saying where it came from."""
    if not DEB_PACKAGE.fullmatch(name):
        raise HubforgeError(f"{where}: {name!r} {NOT_A_PACKAGE}; fix it there")
    return name


def normalize(name: str) -> str:
    """PEP 503 name normalisation: `Foo_Bar.baz` -> `foo-bar-baz`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PythonPin:
    name: str
    version: str
    hashes: frozenset[str]

    def requirement(self) -> str:
        hashes = " ".join(f"--hash=sha256:{h}" for h in sorted(self.hashes))
        return f"{self.name}=={self.version} {hashes}"


def parse_python_lock(text: str, source: str = "<lock>") -> list[PythonPin]:
    """Parse a `--generate-hashes` requirements lock. Every pin must be `==` and carry a hash."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())

    pins: list[PythonPin] = []
    for number, line in enumerate(logical, 1):
        match = _REQ.match(line)
        if not match:
            raise HubforgeError(
                f"{source}: requirement {number} is not pinned with '==': {line.split()[0]!r}; run `invoke lock`"
            )
        hashes = frozenset(m.group("hash") for m in _HASH.finditer(line))
        if not hashes:
            raise HubforgeError(f"{source}: {match.group('name')} has no --hash; run `invoke lock`")
        pins.append(PythonPin(normalize(match.group("name")), match.group("version"), hashes))
    return pins


# What a .deb in Debian's pool is called: package_version_arch.deb (the version may keep an epoch's `:`). A name
# in the host cache and in the build context comes from here, never from a decoded URL as it stands: `%2f..%2f`
# in a lock's URL would otherwise write anywhere the user can (a `.pth` in site-packages runs at every start).
DEB_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~-]*_[A-Za-z0-9.+~:-]*_[a-z0-9]+\.deb")


def deb_filename(url: str) -> str | None:
    """The decoded last part of a .deb URL when it is a plain Debian file name, else None."""
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    return name if DEB_FILENAME.fullmatch(name) and ".." not in name else None


def not_a_deb(url: str) -> str:
    return f"{url!r} is not a Debian file name (package_version_arch.deb)"


@dataclass(frozen=True)
class DebPin:
    package: str
    version: str
    sha256: str
    url: str

    @property
    def filename(self) -> str:
        """The plain file name (apt refuses URL-escaped names such as `libssl3_3.0-1%7edeb12_amd64.deb`), checked
        against DEB_FILENAME: the cache and the build context are written under it."""
        name = deb_filename(self.url)
        if name is None:
            raise HubforgeError(f"{self.package} {self.version}: {not_a_deb(self.url)}; run `invoke lock`")
        return name

    @property
    def arch(self) -> str:
        """The Debian architecture in the file name (`amd64`, `arm64`, or `all`)."""
        return self.filename[: -len(".deb")].rsplit("_", 1)[-1]


def check_deb_arch(pins: list[DebPin], arch: str, source: str) -> None:
    """Refuse, in one line, a lock whose packages are for another architecture than the build's."""
    foreign = sorted({pin.arch for pin in pins} - {arch, "all"})
    if foreign:
        raise HubforgeError(
            f"{source} pins {'/'.join(foreign)} packages, but this Docker daemon builds for {arch}; "
            f"build on an {foreign[0]} host, or run `invoke lock` here to lock for {arch}"
        )


APT_LOCK_HEADER = "# package version sha256 url -- written by `invoke lock`; the build installs exactly these .debs\n"


def parse_apt_lock(text: str, source: str = "<apt.lock>") -> list[DebPin]:
    pins = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if (
            len(fields) != 4
            or not re.fullmatch(r"[0-9a-f]{64}", fields[2])
            or not fields[3].startswith(("http://", "https://"))
        ):
            raise HubforgeError(
                f"{source}:{number}: expected 'package version sha256 url', got {line!r}; run `invoke lock`"
            )
        if deb_filename(fields[3]) is None:
            raise HubforgeError(f"{source}:{number}: {not_a_deb(fields[3])}; refusing the lock, run `invoke lock`")
        pins.append(DebPin(*fields))
    return pins


def format_apt_lock(pins: list[DebPin], requested: list[str]) -> str:
    lines = [APT_LOCK_HEADER, f"# requested: {' '.join(requested)}\n"]
    lines += [f"{p.package} {p.version} {p.sha256} {p.url}\n" for p in sorted(pins, key=lambda p: p.package)]
    return "".join(lines)


def requested_packages(apt_in: Path) -> list[str]:
    """The Debian packages an image asks for (one a line, comments allowed), each checked: they reach a shell."""
    names = []
    for number, raw in enumerate(apt_in.read_text().splitlines(), 1):
        names += [check_package_name(name, f"{apt_in}:{number}") for name in raw.split("#", 1)[0].split()]
    return sorted(set(names))
