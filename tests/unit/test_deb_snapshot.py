"""A locked .deb that Debian's mirror no longer serves (superseded by a point release or a security update) comes
from snapshot.debian.org, found by package and version, and is accepted only when it has the lock's sha256.

The mirror and the snapshot service are loopback HTTP servers that this test starts: the lock stays the only
thing trusted, whoever serves the bytes."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import debs
from hubforge.imagebuild.lockfiles import DebPin

PAYLOAD = b"!<arch>\n" + bytes(range(256)) * 8
SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
POOL = "/debian/pool/main/b/bash/bash_5.2.15-2%2bb13_amd64.deb"


class Archive:
    """What the loopback servers hold: the mirror's pool files, and the snapshot's files by sha1."""

    def __init__(self) -> None:
        self.pool: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {SHA1: PAYLOAD}
        self.binfiles = {
            ("bash", "5.2.15-2+b13"): [
                {"hash": "0" * 40, "architecture": "arm64"},
                {"hash": SHA1, "architecture": "amd64"},
            ]
        }
        self.asked: list[str] = []


@pytest.fixture
def archive() -> Iterator[tuple[Archive, str]]:
    state = Archive()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.asked.append(self.path)
            body = state.pool.get(self.path)
            parts = self.path.split("/")
            if self.path.startswith("/snapshot/mr/binary/") and len(parts) == 7 and parts[6] == "binfiles":
                from urllib.parse import unquote

                found = state.binfiles.get((unquote(parts[4]), unquote(parts[5])))
                body = json.dumps({"result": found}).encode() if found else None
            elif self.path.startswith("/snapshot/file/"):
                body = state.files.get(parts[-1])
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pin_at(base: str, sha256: str) -> DebPin:
    return DebPin("bash", "5.2.15-2+b13", sha256, f"{base}{POOL}")


def test_a_version_the_mirror_no_longer_serves_comes_from_the_snapshot_by_package_and_version(archive, tmp_path):
    state, base = archive
    cache = debs.DebCache(tmp_path / "debs", snapshot=f"{base}/snapshot")
    pin = pin_at(base, hashlib.sha256(PAYLOAD).hexdigest())
    messages: list[str] = []

    cache.fetch([pin], messages.append)

    assert cache.path(pin).read_bytes() == PAYLOAD
    assert state.asked == [POOL, "/snapshot/mr/binary/bash/5.2.15-2%2Bb13/binfiles", f"/snapshot/file/{SHA1}"]
    assert any("no longer has" in m and "snapshot" in m for m in messages)


def test_the_mirror_is_asked_first(archive, tmp_path):
    state, base = archive
    state.pool[POOL] = PAYLOAD
    cache = debs.DebCache(tmp_path / "debs", snapshot=f"{base}/snapshot")
    cache.fetch([pin_at(base, hashlib.sha256(PAYLOAD).hexdigest())])
    assert state.asked == [POOL]


def test_a_snapshot_file_without_the_locks_sha256_is_refused(archive, tmp_path):
    state, base = archive
    state.files[SHA1] = PAYLOAD + b"x"  # the service serves other bytes under the hash it named
    cache = debs.DebCache(tmp_path / "debs", snapshot=f"{base}/snapshot")
    with pytest.raises(
        HubforgeError, match=r"bash_5\.2\.15-2\+b13_amd64\.deb: sha256 \w+ does not match the lock"
    ) as refused:
        cache.fetch([pin_at(base, hashlib.sha256(PAYLOAD).hexdigest())])
    assert "\n" not in str(refused.value)
    assert not any((tmp_path / "debs").rglob("*.deb"))


def test_a_version_neither_serves_says_what_to_do_in_one_line(archive, tmp_path):
    state, base = archive
    state.binfiles.clear()
    cache = debs.DebCache(tmp_path / "debs", snapshot=f"{base}/snapshot")
    with pytest.raises(HubforgeError) as refused:
        cache.fetch([pin_at(base, hashlib.sha256(PAYLOAD).hexdigest())])
    message = str(refused.value)
    assert "bash 5.2.15-2+b13" in message and "snapshot" in message and "invoke lock" in message and "\n" not in message


def test_a_url_outside_a_debian_archive_path_is_not_looked_up_elsewhere(archive, tmp_path):
    state, base = archive
    cache = debs.DebCache(tmp_path / "debs", snapshot=f"{base}/snapshot")
    pin = DebPin(
        "bash", "5.2.15-2+b13", hashlib.sha256(PAYLOAD).hexdigest(), f"{base}/pool/bash_5.2.15-2+b13_amd64.deb"
    )
    with pytest.raises(HubforgeError, match="run `invoke lock`"):
        cache.fetch([pin])
    assert state.asked == ["/pool/bash_5.2.15-2+b13_amd64.deb"]


def test_the_snapshot_archive_follows_the_lock_url():
    assert (
        debs.snapshot_archive("http://deb.debian.org/debian-security/pool/updates/main/a/apt/apt_2.6.2_amd64.deb")
        == "debian-security"
    )
    assert debs.snapshot_archive("http://deb.debian.org/debian/pool/main/a/adduser/adduser_3.134_all.deb") == "debian"
    assert debs.snapshot_archive("http://mirror.example/pool/x_1_all.deb") is None
