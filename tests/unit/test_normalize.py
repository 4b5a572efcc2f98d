"""The normaliser: layers that differ only in when and by whom they were packed get one digest; real changes do not."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from hubforge.imagebuild.normalize import (
    differences,
    entries,
    image_archive,
    image_config,
    iso,
    normalize_layer,
    saved_image,
)

EPOCH = 1767225600


def layer(files: list[tuple], mtime: float, uname: str = "builder", order=sorted, atime: bool = False) -> io.BytesIO:
    """A layer tar: (name, kind, data or link target, mode, uid) entries, written in `order`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, kind, payload, mode, uid in order(files):
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime, info.uname, info.gname = mode, uid, uid, mtime, uname, uname
            if atime:
                info.pax_headers = {"atime": str(mtime + 7.25), "ctime": str(mtime + 3.5)}
            if kind == "file":
                info.size = len(payload)
                out.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = payload if kind != "dir" else ""
            out.addfile(info)
    buffer.seek(0)
    return buffer


FILES = [
    ("usr", "dir", None, 0o755, 0),
    ("usr/bin", "dir", None, 0o755, 0),
    ("usr/bin/tool", "file", b"#!/bin/sh\necho tool\n", 0o755, 0),
    ("usr/bin/alias", "symlink", "tool", 0o777, 0),
    ("usr/lib/zz-data", "file", b"shared bytes", 0o644, 0),
    ("usr/lib/aa-data", "hardlink", "usr/lib/zz-data", 0o644, 0),  # sorts before the file it links to
    ("home/lab/notes.txt", "file", "übung\n".encode(), 0o600, 1000),
]


def normalized(source: io.BytesIO) -> tuple[str, bytes]:
    sink = io.BytesIO()
    digest = normalize_layer(source, sink, EPOCH)
    return digest, sink.getvalue()


def test_order_times_owner_names_and_access_times_do_not_change_the_digest():
    first, first_bytes = normalized(layer(FILES, mtime=EPOCH + 86_400 * 30, uname="root"))
    second, _ = normalized(
        layer(FILES, mtime=EPOCH + 12_345.678, uname="nobody", order=lambda f: list(reversed(f)), atime=True)
    )
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first_bytes)) as out:
        members = out.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {m.mtime for m in members} == {EPOCH}  # clamped
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    assert all("atime" not in m.pax_headers and "ctime" not in m.pax_headers for m in members)
    by_name = {m.name: m for m in members}
    # the hard link's group is written with its first name as the file, whatever the build's order was
    assert by_name["usr/lib/aa-data"].isreg() and by_name["usr/lib/zz-data"].islnk()
    assert by_name["usr/lib/zz-data"].linkname == "usr/lib/aa-data"
    assert by_name["home/lab/notes.txt"].uid == 1000  # numeric owners are kept


def test_older_times_are_kept_and_real_changes_change_the_digest():
    old, old_bytes = normalized(layer(FILES, mtime=EPOCH - 1000))
    with tarfile.open(fileobj=io.BytesIO(old_bytes)) as out:
        assert {m.mtime for m in out.getmembers()} == {EPOCH - 1000}  # clamped, not set: older stays older
    base, _ = normalized(layer(FILES, mtime=EPOCH))
    changed = [f if f[0] != "usr/bin/tool" else (f[0], f[1], b"#!/bin/sh\necho other\n", f[3], f[4]) for f in FILES]
    mode = [f if f[0] != "usr/bin/tool" else (f[0], f[1], f[2], 0o700, f[4]) for f in FILES]
    owner = [f if f[0] != "home/lab/notes.txt" else (f[0], f[1], f[2], f[3], 1001) for f in FILES]
    digests = {
        base,
        normalized(layer(changed, mtime=EPOCH))[0],
        normalized(layer(mode, mtime=EPOCH))[0],
        normalized(layer(owner, mtime=EPOCH))[0],
    }
    assert len(digests) == 4


def test_differences_name_the_file_and_what_differs():
    stamped = FILES + [("etc/build-stamp", "file", b"Thu Dec  3 10:00:01 UTC 2026\n", 0o644, 0)]
    restamped = FILES + [("etc/build-stamp", "file", b"Thu Dec  3 10:03:44 UTC 2026\n", 0o644, 0)]
    first = entries(layer(stamped, mtime=EPOCH))
    second = entries(layer(restamped, mtime=EPOCH + 5))
    lines = differences(first, second)
    assert lines[0] == "etc/build-stamp: contents, time 2026-01-01T00:00:00Z -> 2026-01-01T00:00:05Z"
    assert all(line.endswith("time 2026-01-01T00:00:00Z -> 2026-01-01T00:00:05Z") for line in lines)
    assert differences(first, first) == []
    only = differences(first, entries(layer(FILES, mtime=EPOCH)))
    assert only == ["etc/build-stamp: only in the first build"]


def test_the_config_keeps_what_the_image_does_and_drops_what_the_build_left():
    original = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-12-03T10:00:01.123456789Z",
        "container": "0f1e2d3c4b5a",
        "docker_version": "20.10.24",
        "container_config": {"Hostname": "0f1e2d3c4b5a", "Cmd": ["/bin/sh", "-c", "#(nop) LABEL a=b"]},
        "config": {
            "Hostname": "",
            "User": "1000:1000",
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["jupyterhub"],
            "Image": "sha256:" + "a" * 64,
            "Labels": {"io.hubforge.key": "k"},
            "Volumes": None,
        },
        "history": [
            {"created": "2026-12-03T10:00:00Z", "created_by": "/bin/sh -c #(nop) COPY dir:" + "b" * 64 + " in / "},
            {"created": "2026-12-03T10:00:01Z", "created_by": "/bin/sh -c #(nop)  USER 1000:1000", "empty_layer": True},
        ],
        "rootfs": {"type": "layers", "diff_ids": ["sha256:old"]},
    }
    config = image_config(original, ["c" * 64], EPOCH)
    assert config["created"] == iso(EPOCH) == "2026-01-01T00:00:00Z"
    assert config["config"] == {
        "User": "1000:1000",
        "Env": ["PATH=/usr/bin"],
        "Cmd": ["jupyterhub"],
        "Labels": {"io.hubforge.key": "k"},
    }
    assert "container" not in config and "container_config" not in config and "docker_version" not in config
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "c" * 64]
    assert config["history"][0] == {"created": iso(EPOCH), "created_by": "/bin/sh -c #(nop) COPY dir:<content> in / "}
    assert config["history"][1]["empty_layer"] is True
    later = {**original, "created": "2027-01-01T00:00:00Z", "container": "ffff"}
    assert image_config(later, ["c" * 64], EPOCH) == config


def test_the_archive_loads_as_docker_save_writes_it():
    digest, data = normalized(layer(FILES, mtime=EPOCH))
    config = image_config({"config": {"Cmd": ["sh"]}, "history": [{"created_by": "x"}]}, [digest], EPOCH)
    archive = io.BytesIO()
    image_id = image_archive(archive, config, [(digest, io.BytesIO(data))], ["hubforge/x:k"])
    archive.seek(0)
    read_config, layers = saved_image(archive)
    assert read_config == config and layers == [f"{digest}/layer.tar"]
    assert image_id.startswith("sha256:") and len(image_id) == 71
    archive.seek(0)
    with tarfile.open(fileobj=archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["hubforge/x:k"]


@pytest.mark.parametrize("kind", ["dir", "symlink"])
def test_links_and_directories_keep_their_kind(kind):
    _, data = normalized(layer([("x", kind, "target" if kind == "symlink" else None, 0o755, 0)], mtime=EPOCH))
    with tarfile.open(fileobj=io.BytesIO(data)) as out:
        member = out.getmember("x")
    assert member.isdir() if kind == "dir" else member.issym() and member.linkname == "target"
