"""Broadcast on a live stack: delivered into running labs' event streams, refused when it should be."""

from __future__ import annotations

import time

import pytest

from ..support.hubclient import EventListener
from ..support.livestack import approved_user

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def labs(live, admin):
    users = {name: approved_user(live, admin, name)[1] for name in ("viv", "walt")}
    for name, api in users.items():
        api.start(name)
    listeners = {name: EventListener(api, name) for name, api in users.items()}
    time.sleep(0.5)  # the stream is open once the first byte arrived; give both a moment to subscribe
    yield users, listeners
    for listener in listeners.values():
        listener.close()


def test_broadcast_reaches_every_running_lab_within_3_seconds(live, admin, labs):
    _, listeners = labs
    counted = live.metric("hubforge_broadcast_deliveries_total", result="delivered")
    sent = time.monotonic()
    response = admin.api("POST", "hubforge/broadcast", json={"message": "maintenance at 18:00", "type": "warning"})
    assert response.status_code == 200, response.text
    results = {r["user"]: r["result"] for r in response.json()["results"]}
    assert results["viv"] == "delivered" and results["walt"] == "delivered"
    for listener in listeners.values():
        event = listener.wait_for("maintenance at 18:00", timeout=3.0 - (time.monotonic() - sent))
        assert event is not None and event["type"] == "warning" and event["sender"] == "admin"
    assert live.metric("hubforge_broadcast_deliveries_total", result="delivered") == counted + len(results)


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
    assert (
        admin.http.post(admin.url("hub/api/hubforge/broadcast"), json={"message": "no xsrf"}, timeout=30).status_code
        == 403
    )


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
