"""Backup benchmark: what `invoke backup` and `invoke restore` cost a stack of N users with M MB each.

Run: python benchmarks/backup.py [--users 100] [--mb 50] [--runs 3]   (Docker and `invoke build`'s images)
Starts a stack (its own project, free ports), gives each user a home volume labelled as the spawner labels it, holding
M MB of random data in 1 MB files (incompressible: what restic reads, hashes, encrypts and writes), then, each run
with a fresh repository: the first backup, a second after 1 % of the files were rewritten, and a full restore of the
stopped stack after `invoke down --volumes --user-volumes`. Prints the median of each, as the user sees it (the
`invoke` command's wall-clock time, start-up included), and the repository's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from hub_ext.naming import PROJECT_LABEL, USER_LABEL, VOLUME_LABEL, user_names  # noqa: E402
from tests.support.helpers import positive  # noqa: E402
from tests.support.livestack import current_images, start_stack, stop_stack  # noqa: E402

FILE_MB = 1


def invoke(live, *args: str) -> float:
    """Seconds one `invoke` command took; its output when it failed."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invoke", *args, "--project", live.project],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "INVOKE_HUBFORGE_STACK_DIR": str(live.stack.options.run_dir.parent)},
    )
    if done.returncode != 0:
        raise SystemExit(f"invoke {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started


def in_volume(client, image: str, volume: str, script: str) -> None:
    """A shell script in a one-shot container of the lab image, as the lab's user, with the volume at /data."""
    client.containers.run(
        image, ["sh", "-c", script], volumes={volume: {"bind": "/data", "mode": "rw"}}, user="0:0", remove=True
    )


def fill(client, live, users: int, mb: int) -> list[str]:
    """Each user's home volume, made with the spawner's labels and M files of 1 MB of random data."""
    image = current_images()[0]["lab"]
    prefix = live.stack.options.volume_prefix
    volumes = []
    for index in range(users):
        name = f"user{index:03d}"
        volume = user_names(prefix, name).volumes["home"]
        labels = {PROJECT_LABEL: live.project, USER_LABEL: name, VOLUME_LABEL: "home"}
        client.volumes.create(volume, labels=labels)
        in_volume(
            client,
            image,
            volume,
            f"for i in $(seq 1 {mb // FILE_MB}); do head -c {FILE_MB}M /dev/urandom > /data/f$i; done; "
            "chown -R 1000:1000 /data",
        )
        volumes.append(volume)
    return volumes


def change_one_percent(client, volumes: list[str], mb: int) -> int:
    """Rewrite 1 % of all the files (at least one), spread over the users; returns how many."""
    image = current_images()[0]["lab"]
    files = [(volume, index) for volume in volumes for index in range(1, mb // FILE_MB + 1)]
    chosen = files[::100]  # every hundredth file: 1 %, at least one
    for volume, index in chosen:
        in_volume(client, image, volume, f"head -c {FILE_MB}M /dev/urandom > /data/f{index}")
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=positive, default=100, help="users, each with one home volume (default 100)")
    parser.add_argument("--mb", type=positive, default=50, help="MB of data in each user's volume (default 50)")
    parser.add_argument("--runs", type=positive, default=3, help="runs, each with a fresh repository (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still removes the stack and its volumes
    client = docker.from_env()
    kept = Path(tempfile.mkdtemp(prefix="hubforge-backup-bench-"))
    (kept / "password").write_text("a-benchmark-password\n")
    env = {"BACKUP_REPOSITORY": str(kept / "repository"), "BACKUP_PASSWORD_FILE": str(kept / "password")}
    live = start_stack(kept / "stack", env, volume_prefix="")
    figures: dict[str, list[float]] = {"first": [], "second": [], "restore": []}
    size = 0
    try:
        volumes = fill(client, live, args.users, args.mb)
        changed = 0
        for _ in range(args.runs):
            shutil.rmtree(kept / "repository", ignore_errors=True)
            figures["first"].append(invoke(live, "backup"))
            changed = change_one_percent(client, volumes, args.mb)
            figures["second"].append(invoke(live, "backup"))
            size = sum(f.stat().st_size for f in (kept / "repository").rglob("*") if f.is_file())
            invoke(live, "down", "--volumes", "--user-volumes", "--yes")
            figures["restore"].append(invoke(live, "restore", "latest"))
            live.compose.start()  # the same stack again, for the next run's backup of a running hub
    finally:
        stop_stack(live)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.rmtree(Path(os.path.expanduser("~/.cache/hubforge/restic")) / live.project, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    result = {
        "users": args.users,
        "mb_each": args.mb,
        "data_mb": args.users * args.mb,
        "runs": args.runs,
        "files_changed": changed,
        "repository_mb": round(size / 1e6, 1),
        "median_seconds": {name: round(value, 1) for name, value in medians.items()},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.users} users x {args.mb} MB = {args.users * args.mb} MB of user data, {args.runs} runs (medians):")
    rows = [
        ("first backup", medians["first"]),
        (f"second backup, {changed} files (1 %) rewritten", medians["second"]),
        ("full restore (every volume, the settings)", medians["restore"]),
    ]
    for label, seconds in rows:
        print(f"  {label:<46} {seconds:6.1f} s")
    print(f"  {'repository after two backups':<46} {size / 1e6:6.0f} MB")


if __name__ == "__main__":
    main()
