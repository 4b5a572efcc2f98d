"""Wheels: platform fit, reproducible local wheels that pip installs, and the staged requirements."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hubforge.imagebuild import wheels

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("filename", "fits"),
    [
        ("bcrypt-5.0.0-cp39-abi3-manylinux_2_34_x86_64.whl", True),
        ("cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
        ("six-1.17.0-py2.py3-none-any.whl", True),
        ("numpy-2.0-cp312-cp312-manylinux_2_17_x86_64.whl", False),  # another Python
        ("numpy-2.0-cp311-cp311-musllinux_1_1_x86_64.whl", False),  # another libc
        ("numpy-2.0-cp311-cp311-manylinux_2_39_x86_64.whl", False),  # newer glibc than bookworm's
        ("numpy-2.0-cp311-cp311-manylinux_2_17_aarch64.whl", False),  # another arch
    ],
)
def test_wheel_platform_fit(tmp_path, filename, fits):
    assert wheels.WheelCache(tmp_path, arch="x86_64")._fits(filename) is fits


def test_local_wheel_is_reproducible_and_installable(tmp_path):
    first = wheels.local_wheel(ROOT / "hub_ext", "0.1.0", tmp_path / "a", 1767225600)
    second = wheels.local_wheel(ROOT / "hub_ext", "0.1.0", tmp_path / "b", 1767225600)
    assert first.sha256 == second.sha256 and first.path.name == "hub_ext-0.1.0-py3-none-any.whl"
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(first.path),
        ],
        check=True,
    )
    probe = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import importlib.metadata as m, hub_ext; print(m.version('hub-ext'), hub_ext.__file__)",
        ],
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith("0.1.0 " + str(target))


def test_stage_pins_each_wheel_to_its_file_hash(tmp_path):
    wheel = wheels.local_wheel(ROOT / "hub_ext", "0.1.0", tmp_path / "src", 1767225600)
    requirements = wheels.stage([wheel], tmp_path / "ctx")
    assert requirements.read_text() == f"hub-ext==0.1.0 --hash=sha256:{wheel.sha256}\n"
    assert (tmp_path / "ctx" / wheel.path.name).read_bytes() == wheel.path.read_bytes()
