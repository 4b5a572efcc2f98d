"""Debian packages: resolved once into apt.lock, fetched and verified on the host, installed offline."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import HubforgeError
from .lockfiles import DebPin, check_package_name
from .verify import Verifier, file_sha256

log = logging.getLogger(__name__)

# apt-get --print-uris lines: 'URL' filename size HASHTYPE:hash (apt shows MD5 here, so the SHA256
# comes from `apt-cache show`, i.e. from the signed Packages index).
_URI = re.compile(r"^'(?P<url>[^']+)'\s+(?P<file>\S+)\s+\d+(\s+\S+)?$")
SEPARATOR = "----hubforge----"

# Where a locked .deb comes from once Debian's mirrors no longer serve its version (a point release or a security
# update superseded it): snapshot.debian.org keeps every file Debian ever published, found by package and version
# (its machine-readable API, /mr/binary/<package>/<version>/binfiles, then /file/<sha1>). The lock's sha256 is
# still the only thing trusted.
DEBIAN_SNAPSHOT = "https://snapshot.debian.org"
_ARCHIVE_PATH = re.compile(r"/(?P<archive>debian(?:-security|-ports|-debug)?)/pool/")


def snapshot_archive(url: str) -> str | None:
    """The Debian archive a lock URL's path is in (`debian`, `debian-security`), or None for any other path (a
    private mirror's layout, a test's server): only an archive's files are looked up on the snapshot."""
    match = _ARCHIVE_PATH.search(urllib.parse.urlsplit(url).path)
    return match.group("archive") if match else None


def resolve_script(packages: list[str]) -> str:
    """Shell run in a throwaway container of the base image: exact .deb URLs, then their index stanzas.
    The names are checked here too, where they enter the shell string."""
    names = " ".join(check_package_name(name, "the packages to lock") for name in packages)
    return (
        "set -e; apt-get update -qq >/dev/null; "
        f"apt-get install -y -qq --no-install-recommends --print-uris {names} > /tmp/uris; "
        f"cat /tmp/uris; echo {SEPARATOR}; "
        "sed -n \"s/^'[^']*' \\([^_]*\\)_\\([^_]*\\)_.*/\\1=\\2/p\" /tmp/uris | sed 's/%3a/:/g' "
        "| xargs -r apt-cache show --no-all-versions"
    )


def parse_resolution(output: str) -> list[DebPin]:
    """Pins from the resolve script's output: URLs from --print-uris, SHA256 from the Packages stanzas."""
    if SEPARATOR not in output:
        raise HubforgeError("resolving Debian packages printed no result; run `invoke lock -v` to see why")
    uris_text, stanzas_text = output.split(SEPARATOR, 1)
    hashes: dict[tuple[str, str], str] = {}
    for stanza in stanzas_text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if {"Package", "Version", "SHA256"} <= fields.keys():
            hashes[(fields["Package"], fields["Version"])] = fields["SHA256"]
    pins = []
    for line in uris_text.splitlines():
        match = _URI.match(line.strip())
        if not match:
            if line.startswith("'"):
                raise HubforgeError(f"cannot read apt's answer {line.strip()!r}; please report this")
            continue
        package, version, _arch = match.group("file")[: -len(".deb")].split("_")
        version = urllib.request.unquote(version)
        sha = hashes.get((package, version))
        if sha is None:
            raise HubforgeError(f"no SHA256 for {package} {version} in the package index; run `invoke lock` again")
        pins.append(DebPin(package, version, sha, match.group("url")))
    return pins


def _copy_url(url: str, out) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, out)


class DebCache:
    """.deb files stored by sha256 on the host, checked against the lock again whenever they are staged."""

    def __init__(self, root: Path, verifier: Verifier | None = None, snapshot: str | None = DEBIAN_SNAPSHOT) -> None:
        self.root = root
        self.verifier = verifier or Verifier()
        self.snapshot = snapshot.rstrip("/") if snapshot else None
        root.mkdir(parents=True, exist_ok=True)

    def path(self, pin: DebPin) -> Path:
        return self.root / pin.sha256 / pin.filename

    def fetch(self, pins: list[DebPin], progress=None) -> None:
        missing = [p for p in pins if not self.verifier.intact(self.path(p), p.sha256)]
        for number, pin in enumerate(missing, 1):
            if progress:
                progress(f"downloading {pin.filename} ({number}/{len(missing)})")
            self._download(pin, progress)

    def _download(self, pin: DebPin, progress=None) -> None:
        dest = self.path(pin)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            try:
                self._fetch(pin, tmp, progress)
            except HubforgeError:
                os.unlink(tmp.name)
                raise
        sha = file_sha256(Path(tmp.name))
        if sha != pin.sha256:
            os.unlink(tmp.name)
            raise HubforgeError(
                f"{pin.filename}: sha256 {sha} does not match the lock ({pin.sha256}); run `invoke lock`"
            )
        os.replace(tmp.name, dest)

    def _fetch(self, pin: DebPin, out, progress=None) -> None:
        """The pin's bytes into `out`: from its URL, or, when a Debian mirror answers 404 there, from the snapshot.
        One line (HubforgeError) when neither gives them."""
        try:
            try:
                _copy_url(pin.url, out)
            except urllib.error.HTTPError as gone:
                if gone.code != 404 or not self.snapshot or not snapshot_archive(pin.url):
                    raise
                if progress:
                    progress(f"{pin.filename}: the mirror no longer has this version; fetching it from {self.snapshot}")
                out.seek(0)
                out.truncate()
                _copy_url(self._snapshot_url(pin), out)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = (
                "run `invoke lock` to re-resolve"
                if getattr(exc, "code", None) == 404
                else "check the mirror is reachable"
            )
            raise HubforgeError(f"cannot download {pin.url}: {reason}; {hint}") from exc

    def _snapshot_url(self, pin: DebPin) -> str:
        """The snapshot's address of the locked package's file, for the lock's architecture; one line when none."""
        quote = functools.partial(urllib.parse.quote, safe="")
        listing = f"{self.snapshot}/mr/binary/{quote(pin.package)}/{quote(pin.version)}/binfiles"
        gone = (
            f"{pin.package} {pin.version} is no longer on the mirror ({pin.url}) nor on {self.snapshot}; "
            "run `invoke lock` to re-resolve"
        )
        try:
            with urllib.request.urlopen(listing, timeout=60) as response:
                found = json.load(response).get("result") or []
        except urllib.error.HTTPError as exc:
            raise HubforgeError(gone) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HubforgeError(
                f"{pin.package} {pin.version} is no longer on the mirror, and {listing} did not "
                f"answer: {getattr(exc, 'reason', exc)}; run `invoke lock` to re-resolve"
            ) from exc
        hashes = [f.get("hash") for f in found if isinstance(f, dict) and f.get("architecture") == pin.arch]
        if not hashes or not re.fullmatch(r"[0-9a-f]{40}", str(hashes[0])):
            raise HubforgeError(gone)
        return f"{self.snapshot}/file/{hashes[0]}"

    def stage(self, pins: list[DebPin], dest: Path, progress=None) -> None:
        """The locked .debs in a build context: fetched when missing or changed, then linked and checked."""
        self.fetch(pins, progress)
        dest.mkdir(parents=True, exist_ok=True)
        for pin in pins:
            self.verifier.stage(self.path(pin), dest / pin.filename, pin.sha256)
