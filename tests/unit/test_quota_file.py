"""The quota helper on a real ext4 filesystem in a file (e2fsprogs, no mount, no root): made empty and owned by the
lab's user, grown with the files kept, shrunk only when the files fit, and one line when they do not."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from hub_ext.helpers import quota

E2FSPROGS = pytest.mark.skipif(not shutil.which("debugfs"), reason="e2fsprogs is not installed")
MIB = 2**20


def put(image, name: str, data: bytes, tmp_path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    subprocess.run(["debugfs", "-w", "-R", f"write {source} {name}", str(image)], check=True, capture_output=True)


def get(image, name: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {name}", str(image)], check=True, capture_output=True).stdout


def listing(image) -> str:
    return subprocess.run(["debugfs", "-R", "ls -l /", str(image)], check=True, capture_output=True, text=True).stdout


@E2FSPROGS
def test_a_new_quota_volume_is_empty_sparse_and_the_lab_users(tmp_path):
    image = tmp_path / "jupyterlab-ann_home.img"
    made = quota.prepare(image, 64 * MIB)
    assert made["result"] == "made" and made["size"] == 64 * MIB and made["used"] < 12 * MIB
    assert "lost+found" not in listing(image)  # empty: Docker fills it from the image at the first mount
    stat = subprocess.run(["debugfs", "-R", "stat /", str(image)], check=True, capture_output=True, text=True).stdout
    assert "User:  1000   Group:  1000" in stat
    assert os.stat(image).st_blocks * 512 < 16 * MIB  # sparse: the host holds what is written, not the quota
    assert quota.prepare(image, 64 * MIB)["result"] == "unchanged"


@E2FSPROGS
def test_raising_a_quota_keeps_the_files_and_lowering_it_below_use_is_refused(tmp_path):
    image = tmp_path / "jupyterlab-ann_workspace.img"
    quota.prepare(image, 48 * MIB)
    data = os.urandom(30 * MIB)
    put(image, "results.bin", data, tmp_path)
    with pytest.raises(
        quota.QuotaRefused,
        match=r"\d\d MiB are in use, and the files need at least \d\d MiB; a quota of 32 MiB is refused",
    ):
        quota.prepare(image, 32 * MIB)
    assert quota.usage(image)["size"] == 48 * MIB  # refused: nothing changed
    grown = quota.prepare(image, 96 * MIB)
    assert grown["result"] == "grown" and grown["from"] == 48 * MIB and grown["size"] == 96 * MIB
    assert hashlib.sha256(get(image, "results.bin")).digest() == hashlib.sha256(data).digest()
    shrunk = quota.prepare(image, 80 * MIB)  # the 30 MiB still fit
    assert shrunk["result"] == "shrunk" and shrunk["size"] == 80 * MIB and os.path.getsize(image) == 80 * MIB
    assert get(image, "results.bin") == data


@E2FSPROGS
def test_the_helper_prints_one_line_and_refuses_other_files(tmp_path, capsys):
    image = tmp_path / "jupyterlab-ann_home.img"
    assert quota.main(["prepare", str(image), str(32 * MIB)]) == 0
    assert '"result": "made"' in capsys.readouterr().out
    assert quota.main(["remove", str(image)]) == 0 and not image.exists()
    capsys.readouterr()
    assert quota.main(["remove", str(tmp_path / "passwd")]) == 1
    assert "not a volume's file" in capsys.readouterr().out and (tmp_path / "passwd").exists() is False


def test_doctor_says_whether_the_host_can_attach_quotad_volumes(tmp_path):
    from pathlib import Path

    from hubforge.doctor import loop_devices

    ok, detail = loop_devices(Path("/dev/null"))  # a character device, as /dev/loop-control is
    assert ok and "present" in detail
    ok, detail = loop_devices(tmp_path / "loop-control")
    assert not ok and "a group policy with a storage quota cannot start its members' labs" in detail
