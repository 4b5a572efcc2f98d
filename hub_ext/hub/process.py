"""The hub process: garbage collection suited to a long-lived server with many users."""

from __future__ import annotations

import asyncio
import gc

FREEZE_AFTER_S = 20.0  # the hub has imported and built everything it keeps for its lifetime by then
YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default is 700)


def tune_garbage_collection(freeze_after: float = FREEZE_AFTER_S) -> bool:
    """Keep the collector's full passes short; returns whether the start-up freeze was scheduled.

    A full collection walks every object the hub holds, and it runs on the event loop: with a hundred users
    it paused the hub for 100-250 ms at a time on a busy 2-core host, which a user sees as a page that hangs
    (measured by benchmarks/load.py). Two things shorten it. `gc.freeze()`, once start-up is done, moves the
    ~130 000 objects of the imported modules and the app into a generation the collector no longer walks
    (they live as long as the process anyway), and a higher young-generation threshold makes the passes rarer.
    Garbage is still collected: reference counting frees almost everything at once, and the collector still
    finds cycles among objects made after the freeze.
    """
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
    try:
        loop = asyncio.get_running_loop()  # jupyterhub_config.py is loaded inside the hub's event loop
    except RuntimeError:
        return False  # e.g. `jupyterhub --generate-config`: no server, nothing to freeze
    loop.call_later(freeze_after, gc.freeze)
    return True
