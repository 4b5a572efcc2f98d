"""Self-service on a live stack: restart in place, volume reset, and who may do either."""

from __future__ import annotations

import pytest

from ..support.livestack import approved_user

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def owner(live, admin):
    session, api = approved_user(live, admin, "olive")
    api.start("olive")
    return session, api


@pytest.fixture(scope="module")
def stranger(live, admin):
    return approved_user(live, admin, "sam")


def restart_url(name: str) -> str:
    """Relative to /hub/api/: HubSession.api adds that prefix, HubAPI callers add it themselves."""
    return f"hubforge/users/{name}/restart"


def test_home_page_offers_restart_while_running(owner):
    session, _ = owner
    page = session.http.get(session.url("hub/home"), timeout=30)
    assert '<div id="hubforge-when-running">' in page.text  # shown
    assert '<div id="hubforge-when-stopped" hidden>' in page.text  # shown by the page itself once stopped


def test_restart_keeps_the_container_and_files_and_gives_a_new_kernel(live, owner):
    session, api = owner
    assert api.request(
        "PUT", "user/olive/api/contents/a.txt", json={"type": "file", "format": "text", "content": "A"}
    ).status_code in (200, 201)
    kernel = api.request("POST", "user/olive/api/kernels", json={"name": "python3"}).json()["id"]
    before = live.lab("olive").id
    counted = live.metric("hubforge_server_restarts_total", result="restarted")
    response = session.api("POST", restart_url("olive"))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "restarted"
    assert live.metric("hubforge_server_restarts_total", result="restarted") == counted + 1
    assert live.lab("olive").id == before
    assert api.request("GET", "user/olive/api/contents/a.txt").json()["content"] == "A"
    assert kernel not in {k["id"] for k in api.request("GET", "user/olive/api/kernels").json()}


def test_restart_authorization_and_state(live, admin, admin_api, owner, stranger):
    stranger_session, stranger_api = stranger
    assert stranger_session.api("POST", restart_url("olive")).status_code == 403  # cookie
    assert stranger_api.request("POST", "hub/api/" + restart_url("olive")).status_code == 403  # token
    assert admin_api.request("POST", "hub/api/" + restart_url("nobody")).status_code == 404
    refused = live.metric("hubforge_server_restarts_total", result="refused")
    stopped = stranger_api.request("POST", "hub/api/" + restart_url("sam"))
    assert stopped.status_code == 409 and "not running" in stopped.json()["message"]
    assert live.metric("hubforge_server_restarts_total", result="refused") == refused + 1


def test_cookie_post_without_xsrf_is_refused(owner):
    session, _ = owner
    response = session.http.post(session.url("hub/api/hubforge/users/olive/restart"), timeout=30)
    assert response.status_code == 403


def test_volume_reset_resets_only_what_was_chosen(live, owner):
    session, api = owner
    lab = live.lab("olive")
    for path in ("/home/lab/workspace/w.txt", "/home/lab/h.txt", "/home/lab/.cache/c.txt", "/mnt/shared/s.txt"):
        assert lab.exec_run(["sh", "-c", f"echo x > {path}"], user="lab").exit_code == 0
    running = api.request("POST", "hub/api/hubforge/users/olive/volumes/reset", json={"volumes": ["workspace"]})
    assert running.status_code == 409
    api.stop("olive")
    listing = api.request("GET", "hub/api/hubforge/users/olive/volumes").json()
    assert [v["kind"] for v in listing["volumes"]] == ["home", "workspace", "cache"] and not listing["running"]
    for body in ({"volumes": ["../home"]}, {"volumes": ["shared"]}, {"volume": "workspace"}):
        assert api.request("POST", "hub/api/hubforge/users/olive/volumes/reset", json=body).status_code == 400
    assert api.request("POST", "hub/api/hubforge/users/olive/volumes/reset", data=b"{oops").status_code == 400
    removed = live.metric("hubforge_volume_resets_total", volume="workspace", result="removed")
    result = api.request("POST", "hub/api/hubforge/users/olive/volumes/reset", json={"volumes": ["workspace"]})
    assert result.status_code == 200 and result.json()["results"]["workspace"]["result"] == "removed"
    assert live.metric("hubforge_volume_resets_total", volume="workspace", result="removed") == removed + 1
    api.start("olive")
    lab = live.lab("olive")
    present = lab.exec_run(
        ["sh", "-c", "ls /home/lab/workspace/w.txt /home/lab/h.txt /home/lab/.cache/c.txt /mnt/shared/s.txt"],
        user="lab",
    )
    output = present.output.decode()
    assert "No such file" in output and "workspace/w.txt" in output.split("No such file")[0]
    assert "/home/lab/h.txt" in output and "/mnt/shared/s.txt" in output and "/home/lab/.cache/c.txt" in output


def test_home_and_cache_reset_together(live, owner):
    session, api = owner
    api.stop("olive")
    result = session.api("POST", "hubforge/users/olive/volumes/reset", json={"volumes": ["home", "cache"]})
    assert result.status_code == 200, result.text
    assert {k: v["result"] for k, v in result.json()["results"].items()} == {"home": "removed", "cache": "removed"}
    page = session.http.get(session.url("hub/hubforge/volumes"), timeout=30)
    assert page.status_code == 200 and "Reset selected volumes" in page.text


def test_a_user_cannot_reset_another_users_volumes(stranger):
    session, api = stranger
    assert (
        api.request("POST", "hub/api/hubforge/users/olive/volumes/reset", json={"volumes": ["cache"]}).status_code
        == 403
    )
    assert session.api("POST", "hubforge/users/olive/volumes/reset", json={"volumes": ["cache"]}).status_code == 403
