"""The idle culler, in the hub, per user: each running lab is stopped when it has been idle longer than its owner's
policy's `idle_timeout`, or has run longer than its `max_session` (hub_ext.labs.policy; 0: never). A user's policy
is the default one (IDLE_CULLER_TIMEOUT when IDLE_CULLER_ENABLED=1, no longest session) merged with their groups'.

It replaces jupyterhub-idle-culler, whose single --timeout cannot differ by group. Every CULL_EVERY_S it looks at the
hub's own records (last activity as the proxy and the labs report it, and the server's start) and makes no call per
lab; only a lab to stop costs anything. A lab's files stay: stopping removes its container, never its volumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from hub_ext.spawn.spawner import stop_every_server

log = logging.getLogger("JupyterHub").getChild("idle-culler")
CULL_EVERY_S = 60


@dataclass(frozen=True)
class Verdict:
    user: str
    reason: str  # one line for the hub's log and the audit


def verdict(
    user: str, now: datetime, last_activity: datetime | None, started: datetime | None, idle: int, longest: int
) -> Verdict | None:
    """Whether this running lab is to stop now, and why; None to keep it."""
    if longest and started is not None and (now - started).total_seconds() > longest:
        return Verdict(user, f"ran {int((now - started).total_seconds())} s, longer than its max_session {longest} s")
    if idle and last_activity is not None and (now - last_activity).total_seconds() > idle:
        return Verdict(
            user, f"idle {int((now - last_activity).total_seconds())} s, longer than its idle_timeout {idle} s"
        )
    return None


def _utc(moment: datetime | None) -> datetime | None:
    """JupyterHub stores naive UTC datetimes."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def policy_verdict(spawner, now: datetime) -> Verdict | None:
    """The verdict on one running lab, by its owner's policy now (the spawner's effective policy)."""
    try:
        policy = spawner.effective().policy
    except Exception:  # noqa: BLE001 -- a bad stored policy: the start would refuse it; leave the lab running
        return None
    orm_spawner = spawner.orm_spawner
    return verdict(
        spawner.user.name,
        now,
        _utc(orm_spawner.last_activity),
        _utc(orm_spawner.started),
        policy.idle_timeout or 0,
        policy.max_session or 0,
    )


def to_cull(users: Iterable, now: datetime) -> list[tuple[object, Verdict]]:
    """The running labs of `users` (JupyterHub User objects) that their policies say to stop now."""
    found = []
    for user in users:
        spawner = user.spawners.get("") if "" in user.orm_spawners else None
        if spawner is None or not spawner.active or spawner.pending or not hasattr(spawner, "effective"):
            continue
        decided = policy_verdict(spawner, now)
        if decided is not None:
            found.append((user, decided))
    return found


async def cull_once(app) -> list[Verdict]:
    """One round: stop every lab its owner's policy says to; the verdicts acted on."""
    done = []
    for user, decided in to_cull(list(app.users.values()), datetime.now(timezone.utc)):
        stopped, errors = await stop_every_server(user, app.proxy, log)
        if stopped:
            log.info("idle-culler stopped %s's lab: %s", decided.user, decided.reason)
            done.append(decided)
        elif errors:
            log.warning("idle-culler could not stop %s's lab: %s", decided.user, "; ".join(errors))
    return done


async def cull_forever(app, every: float = CULL_EVERY_S) -> None:
    log.info("idle-culler: in the hub, every %s s, by each user's policy (idle_timeout, max_session)", every)
    while True:
        await asyncio.sleep(every)
        try:
            await cull_once(app)
        except Exception:  # noqa: BLE001 -- one bad round must not end culling for good
            log.exception("idle-culler: a round failed; trying again in %s s", every)
