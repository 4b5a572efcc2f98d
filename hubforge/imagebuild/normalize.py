"""Same inputs, same bytes: an image's layers and config rewritten so that they no longer depend on when or
where they were built.

The classic builder stamps `created` and every history entry with the wall clock, names the build container
in the config, and keeps each file's build-time modification time. Here a layer becomes a tar with its entries
sorted by name, modification times clamped to SOURCE_DATE_EPOCH, owner names dropped (the numeric owners stay),
no access or change times, and only the extended attributes that mean something (capabilities, ACLs); hard links
point to the first of their names in that order. The config keeps what the image does (user, environment,
entrypoint, labels, health check...) and drops what the build left behind (container ids, the parent image, the
daemon's version), with `created` and history from SOURCE_DATE_EPOCH.

This only removes what varies in the packaging. What varies in the files themselves (bytecode with embedded
times, logs, caches, machine ids) is removed where it is made, in the templates; `invoke build --check` names any
that remain. Everything here works on file objects and plain data, so it is unit-tested without Docker.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20
# The runtime settings an image config keeps (Docker's and OCI's "config" object); the rest is build residue.
KEPT_CONFIG = (
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
)
_CONTENT_REF = re.compile(r"\b(dir|file|multi):[0-9a-f]{64}\b")


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Entry:
    """What a file in a layer is, for comparing two builds: everything but its contents, and its contents' digest."""

    name: str
    kind: str  # file, dir, symlink, hardlink, char, block, fifo
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    digest: str  # sha256 of the contents; the target for links
    xattrs: tuple[tuple[str, str], ...] = ()


_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CONTTYPE: "file",
}


def _kept_pax(headers: dict[str, str]) -> dict[str, str]:
    """Extended attributes only (security.capability, ACLs...): never atime, ctime or a fractional mtime."""
    return {k: headers[k] for k in sorted(headers) if k.startswith("SCHILY.xattr.")}


def _digest(handle: IO[bytes] | None) -> str:
    digest = hashlib.sha256()
    if handle is not None:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class _Counting(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it on its way to `sink`."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)


def normalize_layer(source: IO[bytes], sink: IO[bytes], epoch: int) -> str:
    """Write `source` (a layer tar, seekable) to `sink` in its normal form; returns the new tar's sha256 (its diff id).

    Hard links: a layer names the target of a link before the link, in its own order. Sorted by name, a link may
    come first, so each group of hard-linked names is written with its first name (in sorted order) as the file and
    the others as links to it."""
    with tarfile.open(fileobj=source, mode="r:") as layer:
        by_name = {m.name: m for m in layer.getmembers()}
        origin_of: dict[str, str] = {}  # every name of a hard-linked group -> the member that holds the data
        for member in by_name.values():
            if member.islnk():
                origin = member.linkname
                while origin in by_name and by_name[origin].islnk():
                    origin = by_name[origin].linkname
                if origin in by_name:
                    origin_of[member.name] = origin_of[origin] = origin
        first: dict[str, str] = {}  # origin -> the group's first name in sorted order, which carries the data
        for name in sorted(origin_of):
            first.setdefault(origin_of[name], name)
        counting = _Counting(sink)
        with tarfile.open(fileobj=counting, mode="w|", format=tarfile.PAX_FORMAT) as out:
            for name in sorted(by_name):
                member = by_name[name]
                info = tarfile.TarInfo(name)
                info.mode, info.uid, info.gid = member.mode, member.uid, member.gid
                info.uname = info.gname = ""
                info.mtime = min(int(member.mtime), epoch)
                info.pax_headers = _kept_pax(member.pax_headers)
                origin = origin_of.get(name)
                if origin is not None and first[origin] != name:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, first[origin], 0
                    out.addfile(info)
                elif origin is not None or member.isreg():
                    data = by_name[origin] if origin is not None else member
                    info.type, info.size = tarfile.REGTYPE, data.size
                    out.addfile(info, layer.extractfile(data))
                else:
                    info.type, info.linkname = member.type, member.linkname
                    info.devmajor, info.devminor = member.devmajor, member.devminor
                    out.addfile(info)
    return counting.sha.hexdigest()


def entries(source: IO[bytes]) -> dict[str, Entry]:
    """Every file of a layer tar, by name, with its contents' digest: what `--check` compares."""
    found = {}
    with tarfile.open(fileobj=source, mode="r|") as layer:
        for member in layer:
            kind = _KINDS.get(member.type, "other")
            if member.isreg():
                digest = _digest(layer.extractfile(member))
            else:
                digest = member.linkname if member.issym() or member.islnk() else ""
            found[member.name] = Entry(
                member.name,
                kind,
                member.mode,
                member.uid,
                member.gid,
                int(member.mtime),
                member.size,
                digest,
                tuple(_kept_pax(member.pax_headers).items()),
            )
    return found


def saved_entries(saved: Path) -> dict[str, Entry]:
    """Every file of an image, from its `docker save` archive: the layers applied in order (a later layer's file
    replaces an earlier one's; whiteouts are kept as the entries they are)."""
    found: dict[str, Entry] = {}
    with saved.open("rb") as handle:
        _, layer_names = saved_image(handle)
        handle.seek(0)
        with tarfile.open(fileobj=handle, mode="r:") as outer:
            for name in layer_names:
                found.update(entries(outer.extractfile(name)))
    return found


def differences(first: dict[str, Entry], second: dict[str, Entry], limit: int = 20) -> list[str]:
    """The first `limit` files that differ between two builds, in name order, each with what differs."""
    lines = []
    for name in sorted(set(first) | set(second)):
        a, b = first.get(name), second.get(name)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"{name}: only in the {'second' if a is None else 'first'} build")
        else:
            what = []
            if a.kind != b.kind:
                what.append(f"type {a.kind} -> {b.kind}")
            if a.digest != b.digest or a.size != b.size:
                what.append("contents" if a.kind == "file" else f"target {a.digest!r} -> {b.digest!r}")
            if a.mode != b.mode:
                what.append(f"mode {a.mode:o} -> {b.mode:o}")
            if (a.uid, a.gid) != (b.uid, b.gid):
                what.append(f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}")
            if a.mtime != b.mtime:
                what.append(f"time {iso(a.mtime)} -> {iso(b.mtime)}")
            if a.xattrs != b.xattrs:
                what.append("extended attributes")
            lines.append(f"{name}: {', '.join(what)}")
        if len(lines) >= limit:
            break
    return lines


def image_config(
    original: dict[str, Any], diff_ids: list[str], epoch: int, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The config of the normalised image: what it does, its layers, and SOURCE_DATE_EPOCH as every time in it.
    `labels` are added (a release's version and revision), as a LABEL instruction would add them."""
    runtime = dict(original.get("config") or original.get("Config") or {})
    if labels:
        runtime["Labels"] = {**(runtime.get("Labels") or {}), **labels}
    history = []
    for item in original.get("history") or []:
        entry = {"created": iso(epoch), "created_by": _CONTENT_REF.sub(r"\1:<content>", item.get("created_by", ""))}
        if item.get("empty_layer"):
            entry["empty_layer"] = True
        history.append(entry)
    config = {
        "architecture": original.get("architecture", "amd64"),
        "os": original.get("os", "linux"),
        "created": iso(epoch),
        "config": {key: runtime[key] for key in KEPT_CONFIG if runtime.get(key) not in (None, "", [], {})},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": history,
    }
    if labels:
        config["history"].append(
            {
                "created": iso(epoch),
                "created_by": "LABEL " + " ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                "empty_layer": True,
            }
        )
    if original.get("variant"):
        config["variant"] = original["variant"]
    return config


def config_bytes(config: dict[str, Any]) -> bytes:
    """The config as the image id is computed from it: sorted keys, no insignificant white space."""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


class ImageArchive:
    """A `docker load` archive of one image, written as it goes: layers first (each a readable file with its diff id),
    then the config and the manifest, which name them. Docker reads the whole archive before it loads anything."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.out = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT)
        self.layers: list[str] = []

    def add_layer(self, diff_id: str, handle: IO[bytes]) -> None:
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        name = f"{diff_id}/layer.tar"
        if name not in self.layers:  # one layer twice in an image (an empty COPY, say): stored once, listed twice
            _add(self.out, name, handle, size)
        self.layers.append(name)

    def finish(self, config: dict[str, Any], tags: list[str]) -> str:
        """Write the config and the manifest; returns the image id (the sha256 of the config bytes)."""
        raw = config_bytes(config)
        image_id = hashlib.sha256(raw).hexdigest()
        _add(self.out, f"{image_id}.json", io.BytesIO(raw), len(raw))
        manifest = json.dumps([{"Config": f"{image_id}.json", "RepoTags": tags, "Layers": self.layers}]).encode()
        _add(self.out, "manifest.json", io.BytesIO(manifest), len(manifest))
        self.out.close()
        return f"sha256:{image_id}"


def image_archive(
    sink: IO[bytes], config: dict[str, Any], layers: Iterable[tuple[str, IO[bytes]]], tags: list[str]
) -> str:
    """A whole archive at once (see ImageArchive); returns the image id."""
    archive = ImageArchive(sink)
    for diff_id, handle in layers:
        archive.add_layer(diff_id, handle)
    return archive.finish(config, tags)


def _add(out: tarfile.TarFile, name: str, handle: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    out.addfile(info, handle)


def normalize_saved(
    saved: Path, archive: Path, tags: list[str], epoch: int, workdir: Path, labels: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """A `docker save` archive of one image -> a `docker load` archive of its normal form. Returns the new image id
    and its layers' diff ids. One layer at a time is held on disk besides the two archives."""
    with saved.open("rb") as handle:
        original, layer_names = saved_image(handle)
        handle.seek(0)
        diff_ids = []
        with tarfile.open(fileobj=handle, mode="r:") as outer, archive.open("wb") as sink:
            writer = ImageArchive(sink)
            for name in layer_names:
                scratch = workdir / "layer.tar"
                with scratch.open("w+b") as normal:
                    diff_id = normalize_layer(outer.extractfile(name), normal, epoch)
                    writer.add_layer(diff_id, normal)
                scratch.unlink()
                diff_ids.append(diff_id)
            image_id = writer.finish(image_config(original, diff_ids, epoch, labels), tags)
    return image_id, diff_ids


def rootfs_archive(
    rootfs: Path, archive: Path, tags: list[str], runtime: dict[str, Any], created_by: str, epoch: int, workdir: Path
) -> tuple[str, list[str]]:
    """A root filesystem tar (mmdebstrap's) -> a `docker load` archive of a one-layer image with `runtime` as its
    config,
    as `docker import` would make it but with nothing of the moment in it. Returns the image id and the layer."""
    scratch = workdir / "layer.tar"
    with rootfs.open("rb") as source, scratch.open("w+b") as normal, archive.open("wb") as sink:
        diff_id = normalize_layer(source, normal, epoch)
        writer = ImageArchive(sink)
        writer.add_layer(diff_id, normal)
        config = image_config({"config": runtime, "history": [{"created_by": created_by}]}, [diff_id], epoch)
        image_id = writer.finish(config, tags)
    scratch.unlink()
    return image_id, [diff_id]


def saved_image(archive: IO[bytes]) -> tuple[dict[str, Any], list[str]]:
    """From a `docker save` archive of one image (seekable): its config, and its layer tars' names in order."""
    with tarfile.open(fileobj=archive, mode="r:") as saved:
        manifest = json.load(saved.extractfile("manifest.json"))[0]
        config = json.load(saved.extractfile(manifest["Config"]))
    return config, list(manifest["Layers"])
