"""Passwords are hashed and checked with bcrypt in a pool of threads below the event loop's priority, never on it."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt

HASHING_NICENESS = 10  # below the event loop: see lower_priority


def lower_priority() -> None:
    """Run this thread at a lower scheduling priority than the event loop's (nice +10; raising one's own
    niceness needs no privilege). bcrypt still uses every idle core, but when the event loop has work --
    a page, a proxy update, /hub/health -- it gets the CPU first instead of sharing it with the hashes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)
    except OSError:  # not Linux, or refused: the hashes then share the CPU evenly, as before
        pass


# bcrypt costs ~0.4 s of CPU here and releases the GIL: it runs in these threads, never on the event loop.
HASHING = ThreadPoolExecutor(
    max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="bcrypt", initializer=lower_priority
)


# A hash to check against when the account does not exist, so that a miss costs as long as a hit.
NO_ACCOUNT_HASH = bcrypt.hashpw(b"no such account", bcrypt.gensalt())


async def hash_password(password: str) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(HASHING, bcrypt.hashpw, password.encode(), bcrypt.gensalt())


async def password_matches(password: str, hashed: bytes) -> bool:
    return await asyncio.get_running_loop().run_in_executor(HASHING, bcrypt.checkpw, password.encode(), hashed)
