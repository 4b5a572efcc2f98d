"""Lock files: Python and Debian locks parse, bad ones are refused with the fix, apt output is read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import debs
from hubforge.imagebuild.lockfiles import (
    DebPin,
    check_deb_arch,
    format_apt_lock,
    parse_apt_lock,
    parse_python_lock,
    requested_packages,
)

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


@pytest.mark.parametrize(
    "lock", ["images/hub/requirements.lock", "images/lab/requirements.lock", "images/lab/datascience.lock"]
)
def test_committed_python_locks_parse_and_pin_the_tools(lock):
    names = {p.name: p.version for p in parse_python_lock((ROOT / lock).read_text(), lock)}
    assert "pip" in names and "jupyterhub" in names
    assert names["jupyterhub"].startswith("5.")  # NativeAuthenticator 1.3.0 cannot log in on JupyterHub 6


def test_apt_lock_round_trip_and_refusal():
    pins = [
        DebPin("tini", "0.19.0-1+b3", H1, "http://deb.debian.org/debian/pool/main/t/tini/tini_0.19.0-1%2bb3_amd64.deb")
    ]
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
    assert str(refused.value) == (
        "images/hub/apt.lock pins amd64 packages, but this Docker daemon builds for arm64; "
        "build on an amd64 host, or run `invoke lock` here to lock for arm64"
    )


@pytest.mark.parametrize(
    "lock", ["images/hub/apt.lock", "images/lab/apt.lock", "images/gpu-probe/apt.lock", "images/_shared/build-apt.lock"]
)
def test_committed_apt_locks_cover_what_was_requested(lock):
    pins = parse_apt_lock((ROOT / lock).read_text(), lock)
    requested = requested_packages(ROOT / lock.replace(".lock", ".in"))
    assert set(requested) <= {p.package for p in pins}


RESOLUTION = f"""'http://deb.debian.org/debian/pool/main/t/tini/tini_0.19.0-1%2bb3_amd64.deb' tini_0.19.0-1+b3_amd64.deb 267204 MD5Sum:319079aa7b03e3f9e050134d46d7f025
'http://deb.debian.org/debian-security/pool/updates/main/o/openssl/libssl3_3.0.22-1%7edeb12u2_amd64.deb' libssl3_3.0.22-1~deb12u2_amd64.deb 2039888{" "}
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


# Issue 26, part 3: a lock line whose URL decodes to a path outside the cache. The hash passes, since it sits on the
# same line; the name must not come from the decoded URL unchecked.
ESCAPE_URL = (
    "http://deb.debian.org/debian/pool/main/x/x/..%2f..%2f.local%2flib%2fpython3.11%2fsite-packages%2fx_all.pth"
)
ESCAPE_LINE = f"x 1.0 {H1} {ESCAPE_URL}"


def test_a_lock_line_whose_url_leaves_the_cache_is_refused_in_one_line():
    with pytest.raises(HubforgeError) as refused:
        parse_apt_lock(f"# header\n{ESCAPE_LINE}\n", "images/hub/apt.lock")
    message = str(refused.value)
    assert message.startswith("images/hub/apt.lock:2: ") and ESCAPE_URL in message and "\n" not in message


@pytest.mark.parametrize(
    "name",
    [
        "..%2fx_1_all.deb",
        "x_1_all.deb%2f..",
        "..",
        "x_1_all.pth",
        "x_1_all.deb%00.pth",
        "-x_1_all.deb",
        "x_1_AMD64.deb",
        "x%20y_1_all.deb",
        "x_1_all.deb%0a",
        ".x_1_all.deb",
        "x_1.._all.deb",
    ],
)
def test_deb_file_names_outside_the_strict_pattern_are_refused(name):
    with pytest.raises(HubforgeError, match=r"apt.lock:1: .* is not a Debian file name"):
        parse_apt_lock(f"x 1 {H1} http://deb.debian.org/debian/pool/main/x/x/{name}\n", "apt.lock")
    with pytest.raises(HubforgeError, match="is not a Debian file name"):
        _ = DebPin("x", "1", H1, f"http://deb.debian.org/debian/pool/main/x/x/{name}").filename


@pytest.mark.parametrize(
    "lock",
    [
        "images/hub/apt.lock",
        "images/lab/apt.lock",
        "images/gpu-probe/apt.lock",
        "images/idp/apt.lock",
        "images/registry/apt.lock",
        "images/_shared/build-apt.lock",
    ],
)
def test_every_committed_deb_name_fits_the_strict_pattern(lock):
    for pin in parse_apt_lock((ROOT / lock).read_text(), lock):
        assert pin.filename.startswith(f"{pin.package}_") and pin.filename.endswith(f"_{pin.arch}.deb")


def test_fetching_a_pin_whose_url_leaves_the_cache_writes_nothing_outside_it(tmp_path):
    payload = b"import os; os.system('echo pwned')\n"
    (tmp_path / "escape_all.pth").write_bytes(payload)  # what the URL below resolves to on the "mirror"
    (tmp_path / "mirror" / "pool").mkdir(parents=True)
    sha = hashlib.sha256(payload).hexdigest()
    pin = DebPin("x", "1", sha, f"file://{tmp_path}/mirror/pool/..%2f..%2fescape_all.pth")
    cache = debs.DebCache(tmp_path / "cache" / "debs")
    with pytest.raises(HubforgeError, match="is not a Debian file name"):
        cache.fetch([pin])
    assert not (tmp_path / "cache" / "escape_all.pth").exists()
