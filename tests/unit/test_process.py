"""The hub's garbage collection: young passes rarer, and start-up's objects frozen out of full passes."""

from __future__ import annotations

import asyncio
import gc

from hub_ext.hub import process


def test_outside_an_event_loop_nothing_is_scheduled():
    before = gc.get_threshold()
    try:
        assert process.tune_garbage_collection() is False
        assert gc.get_threshold()[0] >= process.YOUNG_THRESHOLD
    finally:
        gc.set_threshold(*before)


def test_inside_the_hubs_loop_start_up_objects_are_frozen_once_it_is_up():
    before = gc.get_threshold()

    async def hub() -> tuple[bool, int, int]:
        scheduled = process.tune_garbage_collection(freeze_after=0.05)
        frozen_at_once = gc.get_freeze_count()
        await asyncio.sleep(0.2)
        return scheduled, frozen_at_once, gc.get_freeze_count()

    try:
        gc.unfreeze()
        scheduled, at_once, later = asyncio.run(hub())
        assert scheduled and at_once == 0  # not while the hub is still starting
        assert later > 10_000  # every object alive then: modules, classes, the app
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
