"""Policy resolution benchmark: what resolving one user's group policies costs a spawn, in the hub's own code.

Run: python benchmarks/policy.py   (no Docker: an in-memory hub database, the spawner's own `effective()`)
Prints the median time of one resolution -- read the user's groups, check each group's policy, merge -- for a user
in no group, in 2 of 5 groups, and in 10 of 50 groups, and the time of the whole pre-spawn step's policy part
(effective policy, images, GPUs) for the 2-of-5 user.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyterhub import orm  # noqa: E402

from hub_ext.labs.policy import PROPERTY  # noqa: E402
from tests.support.fakedaemon import make_spawner  # noqa: E402

ROUNDS = 2000


def timed(call, rounds: int = ROUNDS) -> float:
    """Median seconds of one call."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def user_in(db, name: str, groups: int, member_of: int):
    spawner, user = make_spawner(db, name)
    spawner.lab_images = {"default": "lab:1", "datascience": "lab-ds:1"}
    spawner.mem_limit, spawner.cpu_limit = "2G", 1.0
    for index in range(groups):
        group = orm.Group.find(db, f"g{index}") or orm.Group(
            name=f"g{index}",
            properties={
                PROPERTY: {
                    "mem_limit": f"{1 + index % 8}G",
                    "cpu_limit": 1 + index % 4,
                    "images": ["default", "datascience"][: 1 + index % 2],
                    "environment": {f"G{index}": "1"},
                    "folder": "rw" if index % 3 == 0 else None,
                }
            },
        )
        db.add(group)
        if index < member_of:
            user.groups.append(group)
    db.commit()
    return spawner


def main() -> None:
    db = orm.new_session_factory("sqlite:///:memory:")()
    cases = {
        "no group": user_in(db, "alone", 0, 0),
        "2 of 5 groups": user_in(db, "two", 5, 2),
        "10 of 50 groups": user_in(db, "ten", 50, 10),
    }
    for case, spawner in cases.items():
        spawner.effective()  # warm: the built-in groups exist after the first call
        print(f"resolve a user's policy, {case}: median {timed(spawner.effective) * 1e6:.0f} µs")
    spawner = cases["2 of 5 groups"]

    def policy_part() -> None:
        policy = spawner.effective().policy
        spawner.policy_images(policy)
        asyncio.run(spawner.hand_out_gpus(policy.gpus))

    print(f"the pre-spawn step's policy part (2 of 5 groups): median {timed(policy_part, 500) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
