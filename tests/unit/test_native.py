"""Issue 26, part 4: a native binary that yarn.lock holds without a checksum runs only if native.lock pins its files."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import native

RESOLUTION = "@x/bin-linux-x64-gnu@npm:2.0.0"
FILES = {
    "package.json": json.dumps({"name": "@x/bin-linux-x64-gnu", "version": "2.0.0"}).encode(),
    "x.node": b"\x7fELF native",
}


def tarball(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for rel, data in FILES.items():
            member = tarfile.TarInfo(f"package/{rel}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """An installed extension: yarn.lock with the binary unchecksummed, node_modules holding the registry's files."""
    src = tmp_path / "ext"
    (src / "node_modules/@x/bin-linux-x64-gnu").mkdir(parents=True)
    for rel, data in FILES.items():
        (src / "node_modules/@x/bin-linux-x64-gnu" / rel).write_bytes(data)
    (src / "yarn.lock").write_text(
        f'"{RESOLUTION}":\n  resolution: "{RESOLUTION}"\n  conditions: os=linux & cpu=x64\n  linkType: hard\n'
    )
    return src


def pin_from(tmp_path: Path) -> native.NativePin:
    tar = tarball(tmp_path / "bin.tgz")
    integrity = native.npm_integrity(tar.read_bytes())

    def npm(argv: list[str], cwd: Path) -> str:  # the registry, as npm answers
        if argv[0] == "view":
            return json.dumps(integrity)
        (cwd / "bin.tgz").write_bytes(tar.read_bytes())
        return json.dumps([{"filename": "bin.tgz"}])

    return native.pin_from_registry(RESOLUTION, npm)


def test_the_registrys_files_pass(source: Path, tmp_path: Path) -> None:
    (source / native.NATIVE_LOCK).write_text(native.format_native_lock({RESOLUTION: pin_from(tmp_path)}))
    native.check_installed(source)


def test_a_changed_byte_of_the_installed_binary_is_refused_in_one_line(source: Path, tmp_path: Path) -> None:
    (source / native.NATIVE_LOCK).write_text(native.format_native_lock({RESOLUTION: pin_from(tmp_path)}))
    (source / "node_modules/@x/bin-linux-x64-gnu/x.node").write_bytes(b"\x7fELF nativf")
    with pytest.raises(
        HubforgeError,
        match=r"^node_modules/@x/bin-linux-x64-gnu is not the pinned @x/bin-linux-x64-gnu@npm:2.0.0 \(native.lock\)",
    ) as refused:
        native.check_installed(source)
    assert "\n" not in str(refused.value)


def test_an_installed_binary_without_a_pin_is_refused(source: Path) -> None:
    with pytest.raises(
        HubforgeError, match=r"has no checksum in yarn.lock and no pin in native.lock; run `invoke lock --only native`"
    ):
        native.check_installed(source)


def test_a_tarball_that_is_not_the_registrys_is_refused(tmp_path: Path) -> None:
    tar = tarball(tmp_path / "bin.tgz")

    def npm(argv: list[str], cwd: Path) -> str:
        if argv[0] == "view":
            return json.dumps(native.npm_integrity(b"other"))
        (cwd / "bin.tgz").write_bytes(tar.read_bytes())
        return json.dumps([{"filename": "bin.tgz"}])

    with pytest.raises(HubforgeError, match="not the one the registry names"):
        native.pin_from_registry(RESOLUTION, npm)


@pytest.mark.parametrize(
    ("conditions", "installable"),
    [
        ("os=linux & cpu=x64 & libc=glibc", True),
        ("os=darwin & cpu=arm64", True),
        ("os=linux & cpu=s390x & libc=glibc", False),
        ("os=win32 & cpu=x64", False),
        ("cpu=wasm32", False),
        (None, True),
    ],
)
def test_which_conditions_a_build_host_meets(conditions, installable) -> None:
    assert native.installable_on_a_build_host(conditions) is installable
