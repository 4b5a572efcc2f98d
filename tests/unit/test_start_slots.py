"""Start slots: at most N labs start at once, the rest wait first come first served and know their place."""

from __future__ import annotations

import asyncio

import pytest

from hub_ext.spawn.spawner import StartSlots


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_no_more_than_the_slots_run_and_the_rest_go_in_arrival_order():
    async def scenario():
        slots, running, most, order = StartSlots(2), 0, 0, []

        async def lab(name: str, delay: float) -> None:
            nonlocal running, most
            await asyncio.sleep(delay)  # arrival
            await slots.acquire()
            running += 1
            most = max(most, running)
            order.append(name)
            await asyncio.sleep(0.02)  # starting
            running -= 1
            slots.release()

        await asyncio.gather(*(lab(f"lab{i}", i * 0.001) for i in range(8)))
        return most, order, slots.running, len(slots.waiting)

    most, order, running, waiting = run(scenario())
    assert most == 2
    assert order == [f"lab{i}" for i in range(8)]
    assert (running, waiting) == (0, 0)


def test_a_waiting_lab_knows_how_many_are_ahead():
    async def scenario():
        slots = StartSlots(1)
        await slots.acquire()  # the one that runs
        loop = asyncio.get_running_loop()
        tickets = [loop.create_future() for _ in range(3)]
        waiters = [asyncio.ensure_future(slots.acquire(t)) for t in tickets]
        await asyncio.sleep(0)
        before = [slots.position(t) for t in tickets]
        slots.release()  # the first waiter gets the slot
        await asyncio.sleep(0)
        after = [slots.position(t) for t in tickets]
        for _ in waiters:
            slots.release()
            await asyncio.sleep(0)
        await asyncio.gather(*waiters)
        return before, after

    before, after = run(scenario())
    assert before == [0, 1, 2]
    assert after == [-1, 0, 1]  # -1: no longer waiting, it is starting


def test_a_spawn_that_gives_up_while_waiting_frees_its_place():
    async def scenario():
        slots = StartSlots(1)
        await slots.acquire()
        gives_up = asyncio.ensure_future(slots.acquire())
        patient = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        gives_up.cancel()  # e.g. the spawn timed out or was stopped
        with pytest.raises(asyncio.CancelledError):
            await gives_up
        slots.release()
        await asyncio.wait_for(patient, 1)  # the slot went to the next in line, not to the one that left
        slots.release()
        return slots.running, len(slots.waiting)

    assert run(scenario()) == (0, 0)


def test_a_slot_handed_over_just_as_the_waiter_gives_up_is_passed_on():
    async def scenario():
        slots = StartSlots(1)
        await slots.acquire()
        ticket = asyncio.get_running_loop().create_future()
        late = asyncio.ensure_future(slots.acquire(ticket))
        nxt = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        slots.release()  # hands the slot to `late` by resolving its ticket ...
        late.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await late
        await asyncio.wait_for(nxt, 1)
        slots.release()
        return slots.running

    assert run(scenario()) == 0
