"""Issue 26, part 2: a cached input is checked against its lock where it is used, when it is staged into a build
context, not only when it was downloaded. The cache is shared by every clone, so one changed byte in the cached pip
wheel would otherwise turn off --require-hashes for every Python image.

The inputs come from a loopback "mirror" (an HTTP server for the .debs, a find-links folder for pip download): the
real fetch paths run, and nothing is patched but where they fetch from."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubforge.errors import HubforgeError
from hubforge.imagebuild import wheels
from hubforge.imagebuild.builder import Builder, Settings, Step, input_digests
from hubforge.imagebuild.keys import Manifest
from hubforge.imagebuild.targets import HOST_BUILD_LOCK, Graph, Target
from hubforge.imagebuild.verify import Verifier
from tests.unit.conftest import EmptyImageStore

EPOCH = 1767225600


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder and counts the GETs, so a test sees that a file was fetched again."""

    gets: list[str] = []

    def do_GET(self) -> None:
        type(self).gets.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """A Debian-pool-shaped folder served over loopback HTTP: (folder, base URL, paths requested)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    gets: list[str] = []
    handler = type("Handler", (CountingHandler,), {"gets": gets})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", gets
    finally:
        server.shutdown()
        server.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_one_byte(path: Path) -> None:
    """Change one byte in place: the same inode and size, as a writer to the shared cache would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    with path.open("r+b") as handle:
        handle.write(bytes(data))


@pytest.fixture
def sources(tmp_path: Path, mirror, monkeypatch) -> tuple[Path, Path, Path]:
    """A repo with one target: a .deb on the loopback mirror and a pip wheel in a find-links folder, both locked.
    Returns (root, the original .deb, the original pip wheel)."""
    folder, url, _gets = mirror
    deb = folder / "pool" / "tini_0.19.0-1_amd64.deb"
    deb.parent.mkdir()
    deb.write_bytes(b"!<arch>\n" + bytes(range(256)) * 64)
    package = tmp_path / "pip-src" / "pip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("'''stands in for pip: the wheel that verifies the others'''\n")
    pip_wheel = wheels.build_local_wheel(package, "pip", "26.3", tmp_path / "index", EPOCH)
    backend = tmp_path / "setuptools-src" / "setuptools"
    backend.mkdir(parents=True)
    (backend / "__init__.py").write_text(
        "# stands in for setuptools, the backend the image build makes sdists' wheels with\n"
    )
    backend_wheel = wheels.build_local_wheel(backend, "setuptools", "84.2.1", tmp_path / "index", EPOCH)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip download reads the find-links folder, never PyPI
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    root = tmp_path / "repo"
    (root / "img").mkdir(parents=True)
    (root / "img" / "apt.lock").write_text(f"tini 0.19.0-1 {sha256(deb)} {url}/pool/{deb.name}\n")
    (root / "img" / "requirements.lock").write_text(f"pip==26.3 --hash=sha256:{sha256(pip_wheel)}\n")
    (root / HOST_BUILD_LOCK).parent.mkdir(parents=True)
    # an input of every image with a Python lock: the backend the image build makes locked sdists' wheels with
    (root / HOST_BUILD_LOCK).write_text(f"setuptools==84.2.1 --hash=sha256:{sha256(backend_wheel)}\n")
    return root, deb, pip_wheel


TARGET = Target(
    name="probe",
    repository="hubforge/probe",
    template=None,
    apt_lock="img/apt.lock",
    python_lock="img/requirements.lock",
)


def stage(root: Path, cache: Path) -> Path:
    """Builder.stage_context for TARGET, as `invoke build` runs it before `docker build`."""
    builder = Builder(
        Settings(root=root, cache_dir=cache),
        EmptyImageStore(),
        Graph({"probe": TARGET}),  # type: ignore[arg-type]
        say=lambda message: None,
    )
    builder.__dict__["daemon_arch"] = "amd64"  # the daemon's answer, without a daemon
    step = Step(
        TARGET, Manifest("probe", "FROM scratch\n", input_digests(root, TARGET.all_inputs()), {}, None), exists=False
    )
    return builder.stage_context(step, progress=lambda message: None)


def test_a_changed_byte_in_the_cached_pip_wheel_is_refused_named_and_fetched_again(tmp_path, sources, caplog):
    root, _deb, pip_wheel = sources
    stage(root, tmp_path / "cache")
    cached = next((tmp_path / "cache" / "wheels" / "by-hash").rglob("pip-26.3-*.whl"))
    flip_one_byte(cached)
    with caplog.at_level(logging.WARNING):
        context = stage(root, tmp_path / "cache")
    assert (context / "wheels" / pip_wheel.name).read_bytes() == pip_wheel.read_bytes()
    assert cached.read_bytes() == pip_wheel.read_bytes()  # fetched again into the same content address
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refused) == 1 and str(cached) in refused[0] and "\n" not in refused[0]


def test_a_changed_byte_in_a_cached_deb_is_refused_named_and_fetched_again(tmp_path, sources, mirror, caplog):
    root, deb, _pip = sources
    gets = mirror[2]
    stage(root, tmp_path / "cache")
    cached = next((tmp_path / "cache" / "debs").rglob("tini_*.deb"))
    flip_one_byte(cached)
    with caplog.at_level(logging.WARNING):
        context = stage(root, tmp_path / "cache")
    assert (context / "debs" / deb.name).read_bytes() == deb.read_bytes()
    assert cached.read_bytes() == deb.read_bytes()
    assert gets == [f"/pool/{deb.name}"] * 2
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refused) == 1 and str(cached) in refused[0] and "\n" not in refused[0]


def test_a_changed_deb_that_cannot_be_fetched_again_stops_the_build(tmp_path, sources):
    root, deb, _pip = sources
    stage(root, tmp_path / "cache")
    flip_one_byte(next((tmp_path / "cache" / "debs").rglob("tini_*.deb")))
    deb.unlink()  # the mirror no longer has it
    with pytest.raises(HubforgeError, match=r"cannot download .*tini_0.19.0-1_amd64.deb"):
        stage(root, tmp_path / "cache")


def test_a_file_replaced_under_the_same_size_and_time_is_hashed_again(tmp_path):
    """The remembered hash is keyed by the file's identity: a new inode is a new file, whatever its mtime says."""
    path = tmp_path / "a.whl"
    path.write_bytes(b"one")
    verifier = Verifier()
    assert verifier.sha256(path) == hashlib.sha256(b"one").hexdigest()
    stat = path.stat()
    replacement = tmp_path / "b.whl"
    replacement.write_bytes(b"two")
    replacement.replace(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verifier.sha256(path) == hashlib.sha256(b"two").hexdigest()


def test_a_file_that_changes_between_its_check_and_the_context_is_not_staged(tmp_path):
    source = tmp_path / "cache" / "pip-26.3-py3-none-any.whl"
    source.parent.mkdir()
    source.write_bytes(b"the locked bytes")
    verifier = Verifier()
    assert verifier.intact(source, hashlib.sha256(b"the locked bytes").hexdigest())
    flip_one_byte(source)
    (tmp_path / "ctx").mkdir()
    with pytest.raises(HubforgeError, match=rf"^{source} changed while it was staged .* run the build again$"):
        verifier.stage(source, tmp_path / "ctx" / source.name, hashlib.sha256(b"the locked bytes").hexdigest())
    assert not (tmp_path / "ctx" / source.name).exists()
