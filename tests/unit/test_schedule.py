"""Building targets at once: parents first, at most `jobs` together, and a failure starts nothing new."""

from __future__ import annotations

import threading
import time

import pytest

from hubforge.imagebuild.builder import Step, default_jobs, run_plan
from hubforge.imagebuild.keys import Manifest
from hubforge.imagebuild.targets import Target


def step(name: str, parent: str | None = "base") -> Step:
    return Step(Target(name, f"hubforge/{name}", None, parent=parent), Manifest(name, "", {}, {}, None), exists=False)


GRAPH = [step("base", None), step("hub"), step("lab"), step("gpu-probe"), step("registry")]


class Recorder:
    """Stands in for one build: takes a little time, and notes when it ran and how many ran with it."""

    def __init__(self, fail: str | None = None, seconds: float = 0.05) -> None:
        self.lock, self.now, self.most, self.fail, self.seconds = threading.Lock(), 0, 0, fail, seconds
        self.started: list[str] = []
        self.finished: list[str] = []

    def __call__(self, item: Step) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.started.append(item.target.name)
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
            self.finished.append(item.target.name)
        if item.target.name == self.fail:
            raise RuntimeError(f"{item.target.name} failed")


@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_children_run_together_after_their_parent_within_the_limit(jobs):
    record = Recorder()
    run_plan(GRAPH, jobs, record)
    assert record.started[0] == "base" and record.finished[0] == "base"  # nothing starts before the base is built
    assert sorted(record.finished) == sorted(s.target.name for s in GRAPH)
    assert record.most == min(jobs, 4)


def test_a_failure_starts_nothing_new_lets_the_running_finish_and_is_raised():
    record = Recorder(fail="hub", seconds=0.05)
    slow_lab = Recorder(seconds=0.2)

    def run(item: Step) -> None:
        (slow_lab if item.target.name == "lab" else record)(item)

    with pytest.raises(RuntimeError, match="hub failed"):
        run_plan(GRAPH, 2, run)
    assert "lab" in slow_lab.finished  # running when hub failed: finished, not abandoned
    assert "gpu-probe" not in record.started and "registry" not in record.started


def test_a_failed_parent_starts_no_child():
    record = Recorder(fail="base")
    with pytest.raises(RuntimeError, match="base failed"):
        run_plan(GRAPH, 4, record)
    assert record.started == ["base"]


def test_the_default_is_one_per_core_at_most_four():
    assert [default_jobs(n) for n in (1, 2, 3, 8, 64)] == [1, 2, 3, 4, 4]
