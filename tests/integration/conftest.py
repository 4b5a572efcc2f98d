"""Integration fixtures: one live stack shared by the module's tests, torn down even on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..support import livestack
from ..support.hubclient import HubAPI, HubSession
from ..support.livestack import claim_admin, start_stack, stop_stack

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
RESULTS = Path(__file__).resolve().parents[2] / "test-results"


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.session.stack_failed = True


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    """A stack per test module; a module sets STACK_ENV for its own .env settings, EXTRA_LAB_IMAGES
    for more choices in the image picker and STACK_ENGINE for the swarm engine."""
    stack = start_stack(
        tmp_path_factory.mktemp("stack"),
        getattr(request.module, "STACK_ENV", None),
        getattr(request.module, "EXTRA_LAB_IMAGES", None),
        engine=getattr(request.module, "STACK_ENGINE", "compose"),
    )
    yield stack
    if getattr(request.session, "stack_failed", False):
        stack.dump_logs(RESULTS / "logs" / stack.project)
    stop_stack(stack)


@pytest.fixture(scope="module")
def admin(live) -> HubSession:
    return claim_admin(live)


@pytest.fixture(scope="module")
def admin_api(live, admin) -> HubAPI:
    return livestack.admin_api(live, admin)
