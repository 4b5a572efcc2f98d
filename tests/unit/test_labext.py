"""hubforge.labext: the wheel's key follows the extension's sources and ignores build outputs."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import labext

SOURCE = Path(__file__).resolve().parents[2] / "images" / "lab" / "hubforge-notify"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    copy = tmp_path / "hubforge-notify"
    shutil.copytree(
        SOURCE, copy, ignore=shutil.ignore_patterns("node_modules", "lib", ".yarn", "labextension", "__pycache__")
    )
    return copy


def test_the_key_changes_with_any_source_file(source: Path) -> None:
    before = labext.source_key(source)
    index = source / "src" / "index.ts"
    index.write_text(index.read_text() + "\n// edited\n")
    edited = labext.source_key(source)
    assert edited != before
    index.rename(source / "src" / "moved.ts")  # same bytes, other path
    assert labext.source_key(source) not in (before, edited)


def test_the_key_ignores_build_outputs_and_caches(source: Path) -> None:
    before = labext.source_key(source)
    for rel in (
        "node_modules/x/index.js",
        "lib/index.js",
        "hubforge_notify/labextension/package.json",
        ".yarn/cache/x.zip",
        ".yarn/install-state.gz",
        "dist/x.whl",
        "build/x",
        "tsconfig.tsbuildinfo",
        "hubforge_notify/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/x",
    ):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("generated")
    assert labext.source_key(source) == before
    assert "src/index.ts" in labext.source_files(source)
    (source / "src" / "lib").mkdir()  # only the top-level lib/ is output
    (source / "src" / "lib" / "util.ts").write_text("export {};")
    assert labext.source_key(source) != before


def host_env(bin_dir: Path):
    """A stand-in for WheelCache.host_environment: the bin/ of an environment, here a folder of fake tools."""

    @contextmanager
    def opened() -> Iterator[Path]:
        yield bin_dir

    return opened


def test_a_cached_wheel_is_returned_without_building(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = hashlib.sha256(f"{labext.source_key(source)}\0hostlock".encode()).hexdigest()
    cached = tmp_path / "cache" / key[:32] / "hubforge_notify-0.1.0-py3-none-any.whl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"wheel")
    monkeypatch.setattr(labext.proc, "run", lambda *a, **k: pytest.fail("built although cached"))
    assert labext.build_wheel(source, tmp_path / "cache", host_env(tmp_path), "hostlock") == cached
    with pytest.raises(pytest.fail.Exception):  # another host build lock: another wheel
        labext.build_wheel(source, tmp_path / "cache", host_env(tmp_path), "otherlock")


def test_a_failing_tool_raises_with_its_stderr(source: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "jlpm").write_text("#!/bin/sh\necho 'YN0028: The lockfile would have been modified' >&2\nexit 1\n")
    (bin_dir / "jlpm").chmod(0o755)
    with pytest.raises(HubforgeError, match=r"jlpm install for hubforge-notify failed \(exit 1\):\nYN0028"):
        labext.build_wheel(source, tmp_path / "cache", host_env(bin_dir), "hostlock")
    assert not list((tmp_path / "cache").glob("*/*.whl"))
