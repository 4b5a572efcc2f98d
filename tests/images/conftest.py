"""Image-test fixtures: the refs `invoke build` made for the current keys, and tracked containers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from testcontainers.core.container import DockerContainer

from ..support.livestack import current_images, flavour_image

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"hubforge.test": "images"}

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk cannot be pulled offline; we clean up


@pytest.fixture(scope="session")
def built() -> dict[str, str]:
    """target name -> image ref for the current key; fails (not skips) when an image is missing."""
    return current_images()[0]


@pytest.fixture(scope="session")
def datascience() -> str:
    """The datascience flavour's ref for its current key (`invoke test` builds it); fails when missing."""
    return flavour_image("datascience")


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    return docker.from_env()


class Tracked:
    """Starts containers labelled for the tests and removes every one of them, even on failure."""

    def __init__(self) -> None:
        self.containers: list[DockerContainer] = []

    def start(self, image: str, command: str | list[str] | None = None, **kwargs) -> DockerContainer:
        container = DockerContainer(image, labels=LABELS, **kwargs)
        if command is not None:
            container.with_command(command)
        self.containers.append(container)
        return container.start()

    def run(self, image: str, command: str | list[str] | None = None, **kwargs) -> tuple[int, str]:
        """Run to completion; return the exit code and the combined output."""
        container = self.start(image, command, **kwargs).get_wrapped_container()
        status = container.wait(timeout=120)
        return status["StatusCode"], container.logs(stdout=True, stderr=True).decode(errors="replace")

    def close(self) -> None:
        for container in self.containers:
            try:
                container.get_wrapped_container().remove(force=True, v=True)
            except docker.errors.NotFound:
                pass  # already gone


@pytest.fixture
def tracked(request) -> Iterator[Tracked]:
    tracker = Tracked()
    yield tracker
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        for container in tracker.containers:
            try:
                logs = container.get_wrapped_container().logs(tail=80).decode(errors="replace")
                print(f"--- logs of {container.image} ---\n{logs}")
            except docker.errors.NotFound:
                pass
    tracker.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
