"""Each project owns its labs and volumes: `invoke up --project staging` beside the default project.

Both stacks here take the volume prefix that `invoke up` chooses for their project (the harness's own
prefix would sidestep the very thing under test).
"""

from __future__ import annotations

import time

import docker
import pytest

from hub_ext.naming import user_names

from ..support.livestack import approved_user, claim_admin, start_stack, stop_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    stacks = []
    try:
        for _ in range(2):
            stacks.append(start_stack(tmp_path_factory.mktemp("project"), volume_prefix=""))
        yield stacks
    finally:
        for stack in stacks:
            stop_stack(stack)


def test_one_username_in_two_projects_gets_two_homes(two):
    apis = []
    for live in two:
        _, api = approved_user(live, claim_admin(live), "alice")
        api.start("alice")  # both running at once: their containers do not collide
        apis.append(api)
    first, second = (live.lab("alice") for live in two)
    assert first.id != second.id
    assert (
        first.exec_run(["sh", "-c", "echo production > /home/lab/workspace/only-here.txt"], user="lab").exit_code == 0
    )
    assert second.exec_run(["ls", "/home/lab/workspace/only-here.txt"], user="lab").exit_code != 0

    for api in apis:
        api.stop("alice")
    reset = apis[1].request(
        "POST", "hub/api/hubforge/users/alice/volumes/reset", json={"volumes": ["workspace", "home"]}
    )
    assert reset.status_code == 200 and all(r["result"] == "removed" for r in reset.json()["results"].values())

    apis[0].start("alice")  # the first project's alice still has her file
    kept = two[0].lab("alice").exec_run(["cat", "/home/lab/workspace/only-here.txt"], user="lab")
    assert kept.output == b"production\n"


def test_a_volume_of_another_project_is_never_mounted(two):
    live = two[1]
    home = user_names(live.stack.options.volume_prefix, "bob").volumes["home"]
    planted = docker.from_env().volumes.create(home, labels={"hubforge.project": "someone-else"})
    try:
        _, api = approved_user(live, claim_admin(live), "bob")
        answer = api.request("POST", "hub/api/users/bob/server")
        if answer.status_code in (201, 202):  # a slow spawn answers first and fails after
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and api.user("bob")["servers"]:
                time.sleep(0.5)
            assert not api.user("bob")["servers"], "bob's lab started with another project's volume"
        else:
            assert answer.status_code == 500  # JupyterHub's API hides the reason; the hub log has it
        assert b"belongs to the hubforge project 'someone-else'" in live.hub().logs(tail=200)
        container = user_names(live.stack.options.volume_prefix, "bob").container
        assert not docker.from_env().containers.list(filters={"name": f"^{container}$", "status": "running"})
    finally:
        planted.remove(force=True)
