"""`invoke upgrade` and `invoke rollback` on a live compose stack (issue 30): releases pushed to a registry on
loopback, as `invoke release` puts them on Docker Hub -- 0.9.0 (today's images, its hub one label apart so that it is
another image) and 0.9.1 (a hub that cannot start). A user's lab and kernel run throughout: the upgrade to 0.9.0 keeps
them, the upgrade to 0.9.1 fails its gate and rolls back by itself with the database intact, the upgrade to this
checkout and a rollback by hand keep them too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from ..support.hubclient import HubSession, KernelClient
from ..support.livestack import (
    PASSWORD,
    ROOT,
    approved_user,
    claim_admin,
    current_images,
    run_invoke,
    start_stack,
    stop_stack,
)
from ..support.registry import NAMESPACE, loopback_registry, push_release

pytestmark = pytest.mark.integration
RESTIC_CACHE = Path(os.path.expanduser("~/.cache/hubforge/restic"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with loopback_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


@pytest.fixture(scope="module")
def releases(registry):
    return {
        "0.9.0": push_release(registry, "0.9.0", 'LABEL org.opencontainers.image.version="0.9.0"'),
        # a hub that exits at once: the gate must fail and the stack come back by itself
        "0.9.1": push_release(registry, "0.9.1", 'CMD ["jupyterhub", "--no-such-option=1"]'),
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    keep = tmp_path_factory.mktemp("kept")
    env = {"BACKUP_REPOSITORY": str(keep / "repository"), "BACKUP_PASSWORD_FILE": str(keep / "password")}
    (keep / "password").write_text("a-backup-password-for-the-tests\n")
    (keep / "password").chmod(0o600)
    stack = start_stack(tmp_path_factory.mktemp("stack"), env, volume_prefix="")
    yield stack
    if getattr(request.session, "stack_failed", False):
        stack.dump_logs(ROOT / "test-results" / "logs" / stack.project)
    stop_stack(stack)
    shutil.rmtree(RESTIC_CACHE / stack.project, ignore_errors=True)


@pytest.fixture(scope="module")
def worker(live):
    """ula, whose lab runs through every upgrade, with a kernel holding a value."""
    admin = claim_admin(live)
    session, api = approved_user(live, admin, "ula")
    api.start("ula")
    kernel = KernelClient(api, "ula")
    kernel.execute("answer = 6 * 7")
    return {"session": session, "api": api, "kernel": kernel, "lab": live.lab("ula").id, "admin": admin}


def invoke(live, *args: str) -> subprocess.CompletedProcess[str]:
    return run_invoke(live, *args, timeout=900)


def hub_image(live) -> str:
    return live.hub().attrs["Config"]["Image"]


def record(live) -> dict:
    return json.loads((live.stack.options.run_dir / "upgrade.json").read_text())


def the_lab_lived(live, worker) -> None:
    lab = live.lab("ula")
    assert lab.id == worker["lab"] and lab.status == "running", "the lab was not left running"
    assert worker["kernel"].execute("print(answer)").strip() == "42", "the kernel lost its state"


def test_an_upgrade_to_a_release_keeps_running_labs_and_their_kernels(live, worker, registry, releases):
    hub_before = live.hub().id
    done = invoke(live, "upgrade", "--to", "0.9.0", "--registry", registry, "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "upgraded" in done.stdout and "gate passed" in done.stdout, done.stdout
    assert live.hub().id != hub_before
    assert hub_image(live) == f"{registry}/{NAMESPACE}/hub@{releases['0.9.0']['hub']}"  # pinned by digest
    the_lab_lived(live, worker)
    assert record(live)["state"] == "done" and record(live)["to"]["version"] == "0.9.0"
    # ula's lab runs the image of before: her home page says so; a new start gets the release's lab image
    home = worker["session"].http.get(worker["session"].url("hub/home"), timeout=30)
    assert "still runs the previous lab image" in home.text
    _, other = approved_user(live, worker["admin"], "vic")
    other.start("vic")
    assert live.lab("vic").attrs["Config"]["Image"] == f"{registry}/{NAMESPACE}/lab@{releases['0.9.0']['lab']}"
    # the canary went, with its volumes
    assert not docker.from_env().volumes.list(filters={"label": "hubforge.user=hubforge-canary"})
    again = invoke(live, "upgrade", "--to", "0.9.0", "--registry", registry, "--namespace", NAMESPACE)
    assert again.returncode == 0 and "nothing to upgrade" in again.stdout, again.stdout + again.stderr


def test_a_broken_release_fails_the_gate_and_rolls_back_by_itself(live, worker, registry, releases):
    good = hub_image(live)
    failed = invoke(live, "upgrade", "--to", "0.9.1", "--registry", registry, "--namespace", NAMESPACE)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed" in failed.stderr and "rolled back to 0.9.0" in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert hub_image(live) == good
    assert live.hub().attrs["State"]["Health"]["Status"] == "healthy"
    assert record(live)["state"] == "rolled back" and "healthy" in record(live)["reason"]
    the_lab_lived(live, worker)
    session = HubSession(live.url)  # the database came back intact: her password and approval hold
    assert session.login("ula", PASSWORD).status_code == 302
    assert session.api("GET", "user").json()["name"] == "ula"


def test_an_upgrade_to_this_checkout_then_a_rollback_by_hand(live, worker):
    images, _ = current_images()
    done = invoke(live, "upgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    assert hub_image(live) == images["hub"]
    the_lab_lived(live, worker)
    approved_user(live, worker["admin"], "wes")  # after the snapshot: gone with the database the rollback restores
    back = invoke(live, "rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert hub_image(live) != images["hub"] and "0.9.0" in back.stdout
    the_lab_lived(live, worker)
    assert HubSession(live.url).login("ula", PASSWORD).status_code == 302
    assert HubSession(live.url).login("wes", PASSWORD).status_code != 302, "the database was not restored"
    twice = invoke(live, "rollback")
    assert twice.returncode == 1 and "already rolled back" in twice.stderr
