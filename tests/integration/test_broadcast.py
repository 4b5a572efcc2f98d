"""Broadcast on a live stack: delivered into running labs' event streams, refused when it should be."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from ..hubclient import HubAPI, HubSession
from ..livestack import PASSWORD

pytestmark = pytest.mark.integration


def approved(live, admin, name: str) -> HubAPI:
    session = HubSession(live.url)
    session.signup(name, PASSWORD)
    admin.approve(name)
    assert session.login(name, PASSWORD).status_code == 302
    return HubAPI(live.url, session.new_token(name))


class Listener:
    """One open JupyterLab tab, as far as notifications go: the lab's event stream, read in a thread."""

    def __init__(self, api: HubAPI, user: str) -> None:
        self.events: list[dict] = []
        self.response = api.http.get(api.base + f"user/{user}/hubforge/notifications/events", stream=True,
                                     verify=False, timeout=(5, 60))
        assert self.response.status_code == 200, self.response.text
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    self.events.append(json.loads(line[5:]))
        except (requests.RequestException, AttributeError):
            pass  # closed by the test

    def wait_for(self, message: str, timeout: float = 3.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("message") == message:
                    return event
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self.response.close()


@pytest.fixture(scope="module")
def labs(live, admin):
    users = {name: approved(live, admin, name) for name in ("viv", "walt")}
    for name, api in users.items():
        api.start(name)
    listeners = {name: Listener(api, name) for name, api in users.items()}
    time.sleep(0.5)  # the stream is open once the first byte arrived; give both a moment to subscribe
    yield users, listeners
    for listener in listeners.values():
        listener.close()


def test_broadcast_reaches_every_running_lab_within_3_seconds(admin, labs):
    _, listeners = labs
    sent = time.monotonic()
    response = admin.api("POST", "hubforge/broadcast", json={"message": "maintenance at 18:00", "type": "warning"})
    assert response.status_code == 200, response.text
    results = {r["user"]: r["result"] for r in response.json()["results"]}
    assert results["viv"] == "delivered" and results["walt"] == "delivered"
    for listener in listeners.values():
        event = listener.wait_for("maintenance at 18:00", timeout=3.0 - (time.monotonic() - sent))
        assert event is not None and event["type"] == "warning" and event["sender"] == "admin"


def test_broadcast_to_a_subset_reaches_only_them(admin, labs):
    _, listeners = labs
    response = admin.api("POST", "hubforge/broadcast", json={"message": "only walt", "recipients": ["walt"]})
    assert [r["user"] for r in response.json()["results"]] == ["walt"]
    assert listeners["walt"].wait_for("only walt") is not None
    assert listeners["viv"].wait_for("only walt", timeout=1.0) is None


def test_broadcast_refusals(admin, labs):
    users, _ = labs
    too_long = admin.api("POST", "hubforge/broadcast", json={"message": "x" * 141})
    assert too_long.status_code == 400 and "at most 140" in too_long.json()["message"]
    assert admin.api("POST", "hubforge/broadcast", json={"message": "hi", "type": "loud"}).status_code == 400
    assert users["viv"].request("POST", "hub/api/hubforge/broadcast", json={"message": "hi"}).status_code == 403
    assert admin.http.post(admin.url("hub/api/hubforge/broadcast"), json={"message": "no xsrf"}, timeout=30).status_code == 403


def test_markup_is_delivered_as_text(admin, labs):
    _, listeners = labs
    markup = "<img src=x onerror=alert(1)>"
    admin.api("POST", "hubforge/broadcast", json={"message": markup, "recipients": ["viv"]})
    assert listeners["viv"].wait_for(markup)["message"] == markup


def test_a_user_notifies_their_own_lab_from_a_terminal(live, labs):
    _, listeners = labs
    result = live.lab("viv").exec_run(["hubforge-notify", "job done", "--type", "success"], user="lab")
    assert result.exit_code == 0, result.output
    assert listeners["viv"].wait_for("job done")["type"] == "success"
