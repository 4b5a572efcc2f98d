"""Storage quotas that hold: a quota'd volume is a fixed-size ext4 filesystem in a file on the host (FILE.img),
attached to a loop device, which Docker's `local` driver mounts (type=ext4, device=FILE.dev, a symbolic link to that
loop device). A write past its size fails in the lab with "No space left on device", and nobody else's volume is
touched. It works on any host filesystem (no XFS project quotas needed). Docker's own `o=loop` option is not used:
Docker 20.10's local driver hands it to mount(2), which refuses it ("loop: invalid argument").

This module runs as a one-shot helper, as root in a container of the hub's image with no network and the quota
folder bind-mounted at its host path (`python3 -m hub_ext.helpers.quota prepare|usage|remove ...`), and prints one
JSON line (hub_ext.helpers.volumes.RESULT_PREFIX). e2fsprogs works on the file while the volume is not mounted: the
hub runs it before the lab starts. Attaching and detaching the loop device (util-linux's losetup) needs
CAP_SYS_ADMIN and the host's loop devices, and nothing else (no network, no other device).

- prepare FILE SIZE [--new] [--attach]: make a new filesystem (owned by the lab's user, no lost+found, so Docker
  still fills it from the image at the first mount), or grow one (e2fsck, then resize2fs), or shrink one whose files
  fit; refuses to shrink below what is used, and changes nothing then. --attach: then make sure the file is on a
  loop device of the right size, and point FILE.dev at it (after a host's reboot, at a new one).
- prepare-all JSON: the same for several files in one run, each attached: [{"file", "size", "new"}, ...] (a lab's
  home and workspace at its first start cost one helper, not two).
- usage FILE: size and use of the filesystem, from its superblock.
- remove FILE: detach and delete the files of a removed volume (a reset, a deleted user).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hub_ext.helpers.volumes import RESULT_PREFIX
from hub_ext.naming import LAB_UID

# What a quota helper container gets to attach and detach loop devices, and nothing more: one capability, and of the
# host's /dev only the loop devices (block major 7) and /dev/loop-control (char 10:237).
LOOP_CAPABILITIES = ("SYS_ADMIN",)
LOOP_DEVICE_RULES = ("b 7:* rmw", "c 10:237 rwm")
MIN_SIZE = 16 * 2**20  # ext4 with a journal needs a few MiB; a quota below this is refused by the policy's check
SLACK = 8 * 2**20  # a shrink keeps this much above the blocks in use (metadata, the journal's growth)


class QuotaRefused(RuntimeError):
    """One line: why a quota'd volume cannot take this size."""


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    fine = (0, 1) if command[0] == "e2fsck" else (0,)  # e2fsck's 1: errors found and corrected
    if done.returncode not in fine:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def human(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def superblock(path: Path) -> dict[str, int]:
    """Block size, block count and free blocks of the filesystem in `path` (dumpe2fs -h)."""
    fields = {}
    for line in run("dumpe2fs", "-h", str(path)).splitlines():
        name, _, value = line.partition(":")
        if name in ("Block size", "Block count", "Free blocks", "Reserved block count"):
            fields[name] = int(value.strip())
    return fields


def usage(path: Path) -> dict[str, int]:
    """{"size": bytes the filesystem holds, "used": bytes in use} as `df` would say (reserved blocks are none)."""
    sb = superblock(path)
    block = sb["Block size"]
    return {"size": sb["Block count"] * block, "used": (sb["Block count"] - sb["Free blocks"]) * block}


def prepare(path: Path, size: int) -> dict[str, Any]:
    """Make, grow or shrink the filesystem in `path` to `size` bytes; the result says which."""
    size = max(size, MIN_SIZE) // 4096 * 4096
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as blank:
            blank.truncate(size)  # sparse: the host's disk holds only what is written
        # -m 0: no blocks reserved for root (the lab's user gets the whole quota); root_owner: the lab's user owns it
        run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={LAB_UID}:{LAB_UID}", str(path))
        run("debugfs", "-w", "-R", "rmdir lost+found", str(path))  # empty: Docker copies the image's files in
        return {"result": "made", **usage(path)}
    now = usage(path)
    if now["size"] == size:
        return {"result": "unchanged", **now}
    run("e2fsck", "-f", "-p", str(path))
    if size > now["size"]:
        with open(path, "r+b") as grown:
            grown.truncate(size)
        run("resize2fs", str(path), f"{size // 1024}K")
        return {"result": "grown", "from": now["size"], **usage(path)}
    block = superblock(path)["Block size"]
    estimate = re.search(r"(\d+)\s*$", run("resize2fs", "-P", str(path)).strip())
    smallest = max(now["used"] + SLACK, int(estimate.group(1)) * block if estimate else 0)
    if size < smallest:
        raise QuotaRefused(
            f"{human(now['used'])} are in use, and the files need at least {human(smallest)}; a quota of "
            f"{human(size)} is refused: the user deletes files first, or the quota stays higher"
        )
    run("resize2fs", str(path), f"{size // 1024}K")
    with open(path, "r+b") as shrunk:
        shrunk.truncate(size)
    return {"result": "shrunk", "from": now["size"], **usage(path)}


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.(img|dev)$")


def quota_file(folder: str, volume: str) -> Path:
    """The file that holds a quota'd volume: `<folder>/<volume>.img`."""
    path = Path(folder) / f"{volume}.img"
    if not _SAFE_NAME.match(path.name):
        raise ValueError(f"not a volume's file name: {path.name!r}")
    return path


def device_link(path: Path) -> Path:
    """What the volume's `device` option names: FILE.dev, a link to the loop device that holds FILE.img."""
    return path.with_suffix(".dev")


def loops_of(path: Path) -> list[str]:
    """The loop devices `path` is attached to (losetup -j matches the file itself, not its name)."""
    return [line.split(":", 1)[0] for line in run("losetup", "-j", str(path)).splitlines() if line.strip()]


def attach(path: Path) -> str:
    """Put `path` on a loop device (the one it is on, its size refreshed after a resize, or a free one), and point
    its link at it, replacing the link in one step."""
    found = loops_of(path)
    if found:
        device = found[0]
        run("losetup", "-c", device)  # the file may have grown or shrunk since it was attached
    else:
        device = run("losetup", "-f", "--show", str(path)).strip()
    link, staged = device_link(path), path.with_suffix(".dev.tmp")
    staged.unlink(missing_ok=True)
    os.symlink(device, staged)
    os.replace(staged, link)
    return device


def detach(path: Path) -> None:
    for device in loops_of(path):
        run("losetup", "-d", device)
    device_link(path).unlink(missing_ok=True)


def remove(given: Path) -> dict[str, Any]:
    """Detach and delete the files of a removed volume (its .img and .dev)."""
    if not _SAFE_NAME.match(given.name):
        return {"file": os.fspath(given), "result": "failed", "reason": "not a volume's file"}
    path = given.with_suffix(".img")
    try:
        existed = path.exists()
        if shutil.which("losetup"):
            detach(path)
        path.unlink(missing_ok=True)
        device_link(path).unlink(missing_ok=True)
        return {"file": os.fspath(path), "result": "removed" if existed else "none"}
    except (RuntimeError, OSError) as exc:
        return {"file": os.fspath(path), "result": "failed", "reason": str(exc)}


def prepare_one(path: Path, size: int, new: bool, attach_it: bool) -> dict[str, Any]:
    """prepare (after removing what a removed volume left, for a new one), then attach; a result, never an
    exception."""
    if not _SAFE_NAME.match(path.name):
        return {"file": os.fspath(path), "result": "failed", "reason": "not a volume's file"}
    path = path.with_suffix(".img")  # a volume's `device` option names the link: its file is beside it
    try:
        if new:
            if attach_it:
                detach(path)
            path.unlink(missing_ok=True)
        result = prepare(path, size)
    except QuotaRefused as exc:
        result = {"result": "refused", "reason": str(exc)}
    except (RuntimeError, OSError) as exc:
        return {"file": os.fspath(path), "result": "failed", "reason": str(exc)}
    try:
        if attach_it:  # a refused shrink keeps the volume's size, and it is mounted as it is
            result["device"] = attach(path)
    except (RuntimeError, OSError) as exc:
        return {"file": os.fspath(path), "result": "failed", "reason": f"cannot attach: {exc}"}
    return {"file": os.fspath(path), **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hub_ext.helpers.quota", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "prepare-all", "usage", "remove"):
        command = commands.add_parser(name)
        if name == "remove":  # any number: `invoke down --user-volumes` removes a project's at once
            command.add_argument("files", type=Path, nargs="+")
            continue
        if name == "prepare-all":
            command.add_argument("specs", help='JSON: [{"file": PATH, "size": BYTES, "new": BOOL}, ...]')
            command.add_argument("--no-attach", dest="attach", action="store_false", help="no loop devices")
            continue
        command.add_argument("file", type=Path)
        if name == "prepare":
            command.add_argument("size", type=int)
            command.add_argument("--new", action="store_true", help="a new volume: a file left by a removed one goes")
            command.add_argument("--attach", action="store_true", help="then put it on a loop device, for Docker")
    args = parser.parse_args(argv)
    if args.command == "remove":
        results = [remove(path) for path in args.files]
    elif args.command == "prepare-all":
        try:
            specs = [(Path(s["file"]), int(s["size"]), bool(s.get("new"))) for s in json.loads(args.specs)]
        except (ValueError, TypeError, KeyError) as exc:
            parser.error(f"specs: {exc}")
        results = [prepare_one(path, size, new, args.attach) for path, size, new in specs]
    elif args.command == "prepare":
        results = [prepare_one(args.file, args.size, args.new, args.attach)]
    elif not _SAFE_NAME.match(args.file.name):
        results = [{"file": os.fspath(args.file), "result": "failed", "reason": "not a volume's file"}]
    else:
        path = args.file.with_suffix(".img")
        try:
            measured = {"result": "measured", **usage(path)} if path.exists() else {"result": "none"}
        except (RuntimeError, OSError) as exc:
            measured = {"result": "failed", "reason": str(exc)}
        results = [{"file": os.fspath(path), **measured}]
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0 if all(r["result"] not in ("failed", "refused") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
