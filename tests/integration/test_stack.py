"""The stack from `invoke up`, live: HTTPS, signup and approval, spawning, persistence, shared data, down."""

from __future__ import annotations

import os
import subprocess
import sys

import docker
import pytest

from ..support.helpers import WEB_APP, dashboard_metric_families, metric_family
from ..support.hubclient import HubSession, KernelClient, plain_get
from ..support.livestack import PASSWORD, ROOT, approved_user

pytestmark = pytest.mark.integration


def test_https_health_and_http_redirect(live):
    assert plain_get(live.url + "hub/health").status_code == 200
    redirect = plain_get(live.http_url + "hub/login", allow_redirects=False)
    assert redirect.status_code in (301, 302, 307, 308)
    assert redirect.headers["location"].startswith("https://")


def test_admin_signs_up_and_logs_in(live, admin):
    page = admin.http.get(admin.url("hub/admin"), timeout=30)
    assert page.status_code == 200 and "admin" in page.url


def test_user_is_refused_until_approved(live, admin):
    user = HubSession(live.url)
    user.signup("carol", PASSWORD)
    assert user.login("carol", PASSWORD).status_code == 200  # the login page again, with an error
    admin.approve("carol")
    assert user.login("carol", PASSWORD).status_code == 302


def test_weak_passwords_are_refused(live):
    for password in ("", "short", "password"):
        page = HubSession(live.url).signup("weakling", password)
        assert "successful" not in page.text.lower()


def test_spawn_and_lab_api_through_the_proxy(live, admin):
    api = approved_user(live, admin, "first.last")[1]
    api.start("first.last")
    status = api.request("GET", "user/first.last/api/status")
    assert status.status_code == 200 and "kernels" in status.json()
    lab = live.lab("first.last")
    assert lab.name == f"{live.stack.options.volume_prefix}-first-2elast"
    mounts = {m["Destination"]: m["Name"] for m in lab.attrs["Mounts"] if m["Type"] == "volume"}
    assert mounts["/home/lab/workspace"] == f"{live.stack.options.volume_prefix}-first-2elast_workspace"
    assert lab.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert not lab.attrs["HostConfig"].get("DeviceRequests")  # no GPU on this machine (auto)


def test_the_server_proxy_is_off_by_default(live, admin):
    """LAB_SERVER_PROXY=0: a web app the user runs in the lab has no /proxy/<port>/ route (test_load.py: on)."""
    api = approved_user(live, admin, "nowebby")[1]
    api.start("nowebby")
    assert KernelClient(api, "nowebby").execute(WEB_APP).strip() == "started"
    assert api.request("GET", "user/nowebby/proxy/8050/").status_code == 404
    api.stop("nowebby")


def test_labs_cannot_change_their_image_and_the_hub_has_limits(live, admin):
    api = approved_user(live, admin, "rhea")[1]
    api.start("rhea")
    lab = live.lab("rhea")
    assert lab.attrs["HostConfig"]["ReadonlyRootfs"] is True and lab.attrs["HostConfig"]["CpuShares"] == 128
    # even root inside the container (as a docker-privileged user's tools might be) cannot plant a file
    planted = lab.exec_run(["touch", "/usr/local/bin/planted"], user="root")
    assert planted.exit_code != 0 and b"Read-only file system" in planted.output
    assert lab.exec_run(["sh", "-c", "echo x > /tmp/scratch && cat /tmp/scratch"], user="lab").output == b"x\n"
    assert api.request("GET", "user/rhea/api/status").status_code == 200  # and the lab works
    hub = live.hub().attrs["HostConfig"]
    assert hub["Memory"] == 2 * 2**30 and hub["NanoCpus"] > 0 and hub["PidsLimit"] == 2048


def test_workspace_survives_stop_and_start(live, admin):
    api = approved_user(live, admin, "dave")[1]
    api.start("dave")
    put = api.request(
        "PUT", "user/dave/api/contents/keep.txt", json={"type": "file", "format": "text", "content": "kept"}
    )
    assert put.status_code in (200, 201), put.text
    assert live.lab("dave").attrs["HostConfig"]["AutoRemove"] is False  # restarts in place need that
    api.stop("dave")
    with pytest.raises(docker.errors.NotFound):  # the spawner removed the container itself
        live.lab("dave")
    api.start("dave")
    got = api.request("GET", "user/dave/api/contents/keep.txt")
    assert got.status_code == 200 and got.json()["content"] == "kept"


def test_shared_volume_is_visible_to_two_users(live, admin):
    for name in ("erin", "frank"):
        approved_user(live, admin, name)[1].start(name)
    assert live.lab("erin").exec_run(["sh", "-c", "echo from-erin > /mnt/shared/note.txt"], user="lab").exit_code == 0
    result = live.lab("frank").exec_run(["cat", "/mnt/shared/note.txt"], user="lab")
    assert result.exit_code == 0 and result.output.decode().strip() == "from-erin"


def test_docker_sock_group_is_granted_and_withdrawn(live, admin, admin_api):
    api = approved_user(live, admin, "gina")[1]
    assert admin_api.request("POST", "hub/api/groups/docker-sock/users", json={"users": ["gina"]}).status_code == 200
    api.start("gina")
    assert "/var/run/docker.sock" in {m["Destination"] for m in live.lab("gina").attrs["Mounts"]}
    api.stop("gina")
    assert admin_api.request("DELETE", "hub/api/groups/docker-sock/users", json={"users": ["gina"]}).status_code == 200
    api.start("gina")
    assert "/var/run/docker.sock" not in {m["Destination"] for m in live.lab("gina").attrs["Mounts"]}


def test_builtin_groups_exist(admin_api):
    names = {g["name"] for g in admin_api.request("GET", "hub/api/groups").json()}
    assert {"docker-sock", "docker-privileged"} <= names


def test_metrics_need_the_scrape_token(live):
    token = live.metrics_token()
    assert plain_get(live.url + "hub/metrics").status_code == 403
    scraped = plain_get(live.url + "hub/metrics", headers={"Authorization": f"token {token}"})
    assert scraped.status_code == 200 and "jupyterhub_" in scraped.text
    exported = {metric_family(line.split()[2]) for line in scraped.text.splitlines() if line.startswith("# TYPE ")}
    missing = dashboard_metric_families(ROOT / "stack" / "grafana" / "hubforge.json") - exported
    assert not missing, f"the Grafana dashboard queries metrics the hub does not export: {sorted(missing)}"


def test_status_reports_the_stack(live):
    state = live.stack.status()
    assert state["running"] and any(s["service"] == "hub" and s["health"] == "healthy" for s in state["services"])
    assert state["gpu"]["mode"] == "auto" and state["gpu"]["enabled"] is False
    assert {lab["user"] for lab in state["labs"]} >= {"first.last", "dave"}


def test_logs_of_a_user_show_their_lab_and_an_unknown_name_is_one_line(live, tmp_path):
    argv = live.stack.lab_logs_argv("first.last", follow=False, tail=200)
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "/user/first.last/" in shown.stdout + shown.stderr
    assert live.stack.lab_logs_argv("nobody-here", follow=False, tail=10) is None
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "logs", "nobody-here", "--project", live.project],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "INVOKE_HUBFORGE_STACK_DIR": str(live.stack.options.run_dir.parent)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    error = result.stderr.strip()
    assert (
        error.count("\n") == 0 and "no service or running lab named 'nobody-here'" in error and "first.last" in error
    ), error


def test_down_removes_containers_and_keeps_volumes(live):
    volumes_before = {v["Name"] for v in live.stack.docker.volumes({"hubforge.project": live.project})}
    live.stack.down(volumes=False, user_volumes=False)
    assert live.containers() == []
    volumes_after = {v["Name"] for v in live.stack.docker.volumes({"hubforge.project": live.project})}
    assert volumes_before and volumes_after == volumes_before
