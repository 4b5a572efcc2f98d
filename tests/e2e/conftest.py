"""e2e fixtures: a live stack per configuration, a headless Chromium, and artifacts of failing tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..support.hubclient import HubAPI, HubSession
from ..support.livestack import approved_user, claim_admin, start_stack, stop_stack

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
TIMEOUT_MS = 20_000  # every locator and navigation; slower steps pass their own
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def browser_executable(playwright) -> str | None:
    """HUBFORGE_BROWSER, else a Playwright-managed Chromium when installed, else the system's."""
    if os.environ.get("HUBFORGE_BROWSER"):
        return os.environ["HUBFORGE_BROWSER"]
    if Path(playwright.chromium.executable_path).exists():
        return None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.exit("no browser: install Chromium (`invoke setup`) or set HUBFORGE_BROWSER", returncode=4)
    return found


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args, playwright):
    return {
        **browser_type_launch_args,
        "executable_path": browser_executable(playwright),
        "args": CHROMIUM_ARGS + list(browser_type_launch_args.get("args", [])),
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "ignore_https_errors": True, "viewport": {"width": 1400, "height": 900}}


@pytest.fixture(autouse=True)
def _timeouts(request):
    if "page" in request.fixturenames:
        page = request.getfixturevalue("page")
        page.set_default_timeout(TIMEOUT_MS)
        page.set_default_navigation_timeout(60_000)


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by parameters, which would undo this order
def pytest_collection_modifyitems(items):
    """The admin's first signup claims the shared stack, so that flow runs before any other. The swarm engine's
    flows run last: leaving the swarm afterwards left the shared compose stack's hub answering 503."""

    def rank(item) -> int:
        if item.get_closest_marker("claims_admin"):
            return 0
        return 2 if item.module.__name__.endswith("test_swarm") else 1

    items.sort(key=rank)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        item.session.stack_failed = True


def _stack(tmp_path_factory, request, env=None):
    live = start_stack(tmp_path_factory.mktemp("e2e"), env)
    if request.config.getoption("--keep-stack", default=False):
        print(
            f"\nstack {live.project} kept at {live.url} (remove with `invoke down --project {live.project} --volumes "
            "--user-volumes --yes`)"
        )
    return live


@pytest.fixture(scope="session")
def live(tmp_path_factory, request):
    """The default stack (signup on, GPU auto), shared by every flow that needs no other settings."""
    stack = _stack(tmp_path_factory, request)
    yield stack
    if getattr(request.session, "stack_failed", False):
        stack.dump_logs(RESULTS / "logs" / stack.project)
    if not request.config.getoption("--keep-stack", default=False):
        stop_stack(stack)


@pytest.fixture(scope="session")
def admin_http(live) -> HubSession:
    """An admin session over HTTP (for arranging state quickly); signs the admin up if no test did."""
    return claim_admin(live)


@pytest.fixture(scope="session")
def make_user(live, admin_http):
    """Sign up and approve a user over HTTP; returns its token API."""

    def make(name: str) -> HubAPI:
        return approved_user(live, admin_http, name)[1]

    return make
