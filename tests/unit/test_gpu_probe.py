"""Unit tests for images/gpu-probe/probe.sh, run against a fake nvidia-smi."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[2] / "images" / "gpu-probe" / "probe.sh"

HEADER = """\
Tue Nov 21 21:14:02 2023
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: 12.2     |
|-----------------------------------------+----------------------+----------------------+
"""
TWO_GPUS = """\
0, NVIDIA A100-SXM4-40GB, GPU-1d2f6a3c-9b0e-4f2a-8c1d-7e5b3a9f0c11, 40960, 535.104.05
1, NVIDIA A100-SXM4-40GB, GPU-8e4b2c7d-0a1f-4e3b-9d2c-6f1a0b8e7d22, 40960, 535.104.05
"""
DRIVER_ERROR = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def fake_nvidia_smi(bindir: Path, query_out: str, header: str = HEADER, rc: int = 0) -> None:
    """Write a fake nvidia-smi that prints query_out for --query-gpu, else the header."""
    script = bindir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "--query-gpu=*) cat <<'__CSV__'\n"
        f"{query_out}__CSV__\n;;\n"
        "*) cat <<'__HDR__'\n"
        f"{header}__HDR__\n;;\n"
        "esac\n"
        f"exit {rc}\n"
    )
    script.chmod(0o755)


def run_probe(bindir: Path, shell: list[str] | None = None) -> tuple[int, dict]:
    """Run probe.sh with PATH limited to bindir, which holds `awk` (and maybe nvidia-smi)."""
    if not (bindir / "awk").exists():
        (bindir / "awk").symlink_to(shutil.which("awk"))
    if not (bindir / "cat").exists():  # used by the fake nvidia-smi
        (bindir / "cat").symlink_to(shutil.which("cat"))
    proc = subprocess.run(
        [*(shell or ["/bin/sh"]), str(PROBE)],
        env={"PATH": str(bindir), "LC_ALL": "C"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0])


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def assert_two_gpus(rc: int, out: dict) -> None:
    assert rc == 0
    assert out == {
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA A100-SXM4-40GB",
                "uuid": "GPU-1d2f6a3c-9b0e-4f2a-8c1d-7e5b3a9f0c11",
                "memory_mb": 40960,
            },
            {
                "index": 1,
                "name": "NVIDIA A100-SXM4-40GB",
                "uuid": "GPU-8e4b2c7d-0a1f-4e3b-9d2c-6f1a0b8e7d22",
                "memory_mb": 40960,
            },
        ],
        "driver": "535.104.05",
        "cuda": "12.2",
        "reason": None,
    }
    assert all(type(g["index"]) is int and type(g["memory_mb"]) is int for g in out["gpus"])


def test_two_gpus(bindir: Path) -> None:
    fake_nvidia_smi(bindir, TWO_GPUS)
    assert_two_gpus(*run_probe(bindir))


def test_two_gpus_busybox(bindir: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not installed")
    for applet in ("awk", "cat"):  # use busybox's own awk, as in the image
        (bindir / applet).symlink_to(busybox)
    fake_nvidia_smi(bindir, TWO_GPUS)
    assert_two_gpus(*run_probe(bindir, [busybox, "sh"]))


def test_no_cuda_in_header(bindir: Path) -> None:
    fake_nvidia_smi(bindir, TWO_GPUS, header="NVIDIA-SMI 535.104.05\n")
    rc, out = run_probe(bindir)
    assert rc == 0
    assert out["cuda"] is None
    assert out["driver"] == "535.104.05"


@pytest.mark.parametrize(
    "name",
    ['NVIDIA "Quoted" GPU', "NVIDIA Back\\slash GPU", 'Mixed \\" \\\\ "\\', "Tab\there"],
)
def test_name_is_json_escaped(bindir: Path, name: str) -> None:
    fake_nvidia_smi(bindir, f"0, {name}, GPU-abc, 16384, 550.54.15\n")
    rc, out = run_probe(bindir)
    assert rc == 0
    assert out["gpus"] == [{"index": 0, "name": name, "uuid": "GPU-abc", "memory_mb": 16384}]


def test_nvidia_smi_missing(bindir: Path) -> None:
    rc, out = run_probe(bindir)
    assert rc == 3
    assert out["gpus"] == [] and out["driver"] is None and out["cuda"] is None
    assert "nvidia-smi not found" in out["reason"]


@pytest.mark.parametrize(
    ("query_out", "exit_code", "expected"),
    [
        (DRIVER_ERROR + "\n", 9, ["exit code 9", DRIVER_ERROR]),
        ("", 0, ["no GPUs"]),
        ("No devices were found\n", 6, ["exit code 6", "No devices were found"]),
    ],
    ids=["driver-failure", "empty-output", "no-devices"],
)
def test_no_gpus(bindir: Path, query_out: str, exit_code: int, expected: list[str]) -> None:
    fake_nvidia_smi(bindir, query_out, rc=exit_code)
    rc, out = run_probe(bindir)
    assert rc == 3
    assert out == {"gpus": [], "driver": None, "cuda": None, "reason": out["reason"]}
    for text in expected:
        assert text in out["reason"]
