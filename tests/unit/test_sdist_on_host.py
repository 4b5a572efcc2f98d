"""Issue 26, part 4: an sdist's build code never runs on the host.

An sdist carries its own build code: a legacy setup.py, or a pyproject.toml whose backend sits in the sdist itself
(`backend-path`). Building its wheel on the host runs that code there, as root, with the host's network. Its hash in
the lock only says it is the file that was locked, not that its code is harmless. So the host hands the verified sdist
to the image build (no network, a throwaway stage) and never builds it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from hubforge.imagebuild import wheels
from hubforge.imagebuild.lockfiles import PythonPin
from hubforge.imagebuild.verify import file_sha256

BACKEND = """
import pathlib
def _mark():
    pathlib.Path({marker!r}).write_text("the sdist's code ran here")
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _mark()
    raise SystemExit("no wheel from this backend")
def get_requires_for_build_wheel(config_settings=None):
    _mark()
    return []
"""


def hostile_sdist(folder: Path, marker: Path) -> Path:
    """evil-1.0.tar.gz, whose in-tree build backend writes `marker` when anything asks it to build."""
    files = {
        "evil-1.0/pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "evil-1.0/backend.py": BACKEND.format(marker=str(marker)),
        "evil-1.0/PKG-INFO": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
    }
    path = folder / "evil-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cache_holding(tmp_path: Path, sdist: Path) -> tuple[wheels.WheelCache, PythonPin]:
    sha = file_sha256(sdist)
    cache = wheels.WheelCache(tmp_path / "cache", host_lock="")  # an empty host build lock: no backend to install
    stored = tmp_path / "cache" / "by-hash" / sha
    stored.mkdir(parents=True)
    (stored / sdist.name).write_bytes(sdist.read_bytes())
    return cache, PythonPin("evil", "1.0", frozenset({sha}))


def test_an_sdist_in_the_lock_runs_no_code_on_the_host(tmp_path):
    marker = tmp_path / "ran-on-the-host"
    cache, pin = cache_holding(tmp_path, hostile_sdist(tmp_path, marker))

    found = cache.distribution_for(pin)
    wheels.stage([found], tmp_path / "context" / "wheels")

    assert not marker.exists(), "the sdist's build backend ran on the host"
    # it goes into the build context as it was locked, for the network-less image build to turn into a wheel
    staged = tmp_path / "context" / "wheels" / "evil-1.0.tar.gz"
    assert file_sha256(staged) == next(iter(pin.hashes))
    assert f"evil==1.0 --hash=sha256:{file_sha256(staged)}" in (staged.parent / "requirements.txt").read_text()
    assert found.is_sdist
