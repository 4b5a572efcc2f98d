"""Lock files: Python and Debian locks parse, bad ones are refused with the fix, apt output is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubforge.build import debs
from hubforge.errors import HubforgeError
from hubforge.build.locks import DebPin, check_deb_arch, format_apt_lock, parse_apt_lock, parse_python_lock, requested_packages

ROOT = Path(__file__).resolve().parents[2]
H1, H2 = "a" * 64, "b" * 64


def test_python_lock_with_continuations_and_comments():
    text = f"""# header
Foo_Bar==1.2 \\
    --hash=sha256:{H1} \\
    --hash=sha256:{H2}
    # via something
baz==3.0 --hash=sha256:{H1}  # via foo
"""
    pins = parse_python_lock(text)
    assert [(p.name, p.version) for p in pins] == [("foo-bar", "1.2"), ("baz", "3.0")]
    assert pins[0].hashes == {H1, H2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo>=1.0 --hash=sha256:" + H1, "not pinned with '=='"),
        ("foo==1.0\n", "foo has no --hash"),
    ],
)
def test_python_lock_refusals(text, message):
    with pytest.raises(HubforgeError, match=message):
        parse_python_lock(text, "x.lock")


@pytest.mark.parametrize("lock", ["images/hub/requirements.lock", "images/lab/requirements.lock", "images/lab/datascience.lock"])
def test_committed_python_locks_parse_and_pin_the_tools(lock):
    names = {p.name: p.version for p in parse_python_lock((ROOT / lock).read_text(), lock)}
    assert "pip" in names and "jupyterhub" in names
    assert names["jupyterhub"].startswith("5.")  # NativeAuthenticator 1.3.0 cannot log in on JupyterHub 6


def test_apt_lock_round_trip_and_refusal():
    pins = [DebPin("tini", "0.19.0-1+b3", H1, "http://deb.debian.org/debian/pool/main/t/tini/tini_0.19.0-1%2bb3_amd64.deb")]
    assert parse_apt_lock(format_apt_lock(pins, ["tini"])) == pins
    assert pins[0].filename == "tini_0.19.0-1+b3_amd64.deb"
    with pytest.raises(HubforgeError, match=r"apt.lock:2: expected 'package version sha256 url'"):
        parse_apt_lock("# c\ntini 1.0 nothex http://x/y.deb\n", "apt.lock")


def test_a_lock_for_another_architecture_is_refused_in_one_line():
    pins = parse_apt_lock((ROOT / "images/hub/apt.lock").read_text())
    assert {pin.arch for pin in pins} == {"amd64", "all"}
    check_deb_arch(pins, "amd64", "images/hub/apt.lock")  # the committed locks build here
    with pytest.raises(HubforgeError) as refused:
        check_deb_arch(pins, "arm64", "images/hub/apt.lock")
    assert str(refused.value) == ("images/hub/apt.lock pins amd64 packages, but this Docker daemon builds for arm64; "
                                  "build on an amd64 host, or run `invoke lock` here to lock for arm64")


@pytest.mark.parametrize("lock", ["images/hub/apt.lock", "images/lab/apt.lock", "images/gpu-probe/apt.lock", "images/_shared/build-apt.lock"])
def test_committed_apt_locks_cover_what_was_requested(lock):
    pins = parse_apt_lock((ROOT / lock).read_text(), lock)
    requested = requested_packages(ROOT / lock.replace(".lock", ".in"))
    assert set(requested) <= {p.package for p in pins}


RESOLUTION = f"""'http://deb.debian.org/debian/pool/main/t/tini/tini_0.19.0-1%2bb3_amd64.deb' tini_0.19.0-1+b3_amd64.deb 267204 MD5Sum:319079aa7b03e3f9e050134d46d7f025
'http://deb.debian.org/debian-security/pool/updates/main/o/openssl/libssl3_3.0.22-1%7edeb12u2_amd64.deb' libssl3_3.0.22-1~deb12u2_amd64.deb 2039888 
'http://deb.debian.org/debian/pool/main/b/busybox/busybox-static_1%3a1.35.0-4_amd64.deb' busybox-static_1%3a1.35.0-4_amd64.deb 928188 MD5Sum:f6
{debs.SEPARATOR}
Package: tini
Version: 0.19.0-1+b3
SHA256: {H1}

Package: libssl3
Version: 3.0.22-1~deb12u2
Description: x
 continuation: line
SHA256: {H2}

Package: busybox-static
Version: 1:1.35.0-4
SHA256: {"c" * 64}
"""


def test_apt_resolution_output_is_read_with_security_lines_and_epochs():
    pins = debs.parse_resolution(RESOLUTION)
    assert [(p.package, p.version, p.sha256) for p in pins] == [
        ("tini", "0.19.0-1+b3", H1),
        ("libssl3", "3.0.22-1~deb12u2", H2),
        ("busybox-static", "1:1.35.0-4", "c" * 64),
    ]


def test_apt_resolution_without_a_hash_is_refused():
    broken = RESOLUTION.replace(f"SHA256: {H2}", "")
    with pytest.raises(HubforgeError, match="no SHA256 for libssl3"):
        debs.parse_resolution(broken)


def test_deb_cache_refuses_a_file_with_the_wrong_hash(tmp_path):
    payload = tmp_path / "tini_1_amd64.deb"
    payload.write_bytes(b"not what the lock says")
    cache = debs.DebCache(tmp_path / "cache")
    with pytest.raises(HubforgeError, match="does not match the lock"):
        cache.fetch([DebPin("tini", "1", H1, payload.as_uri())])
    assert not any((tmp_path / "cache").rglob("*.deb"))
