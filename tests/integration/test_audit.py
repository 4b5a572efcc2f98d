"""The audit trail on a live stack (issue 29, part 3): each audited action leaves a record with who, whom, what,
when and from where, in the hub's database (the API and page read it) and as a JSON line in the hub's log."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ..support.hubclient import HubSession
from ..support.livestack import ADMIN, PASSWORD, approved_user

pytestmark = pytest.mark.integration


def records(admin_api, **query) -> list[dict]:
    answer = admin_api.request("GET", "hub/api/hubforge/audit", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["records"]


def test_each_action_is_recorded_with_who_whom_and_where(live, admin, admin_api):
    session, _ = approved_user(live, admin, "ann")  # signup, approve
    assert HubSession(live.url).login("ann", "not-her-password").status_code != 302  # a failed login
    token = session.xsrf("hub/change-password")
    changed = session.http.post(
        session.url("hub/change-password"),
        timeout=60,
        data={
            "_xsrf": token,
            "old_password": PASSWORD,
            "new_password": "Another-passw0rd!",
            "new_password_confirmation": "Another-passw0rd!",
        },
    )
    assert "changed successfully" in changed.text
    reset = admin.http.post(
        admin.url("hub/change-password/ann"),
        timeout=60,
        data={
            "_xsrf": admin.xsrf("hub/change-password/ann"),
            "new_password": "Third-passw0rd!",
            "new_password_confirmation": "Third-passw0rd!",
        },
    )
    assert reset.status_code == 200
    assert admin_api.request("PUT", "hub/api/hubforge/policies/team", json={"mem_limit": "1G"}).status_code == 201
    assert session.api("POST", "hubforge/users/ann/volumes/reset", json={"volumes": ["cache"]}).status_code == 200
    assert admin_api.request("POST", "hub/api/hubforge/broadcast", json={"message": "hello"}).status_code == 200

    about_ann = {(r["actor"], r["action"]) for r in records(admin_api, user="ann")}
    assert {
        ("ann", "signup"),
        (ADMIN, "approve"),
        ("-", "login-failed"),
        ("ann", "password-change"),
        (ADMIN, "password-reset"),
        ("ann", "volume-reset"),
    } <= about_ann
    (policy,) = records(admin_api, action="policy-change")
    assert policy["subject"] == "team" and policy["detail"]["policy"] == {"mem_limit": "1G"} and policy["address"]
    assert records(admin_api, action="broadcast")[0]["detail"]["message"] == "hello"
    failed = records(admin_api, action="login-failed", user="ann")[0]
    assert failed["detail"] == {"reason": "wrong username or password"} and failed["address"]

    # the same records as JSON lines in the hub's log, and as CSV
    lines = [line for line in live.hub().logs(tail=3000).decode().splitlines() if '"action": "password-reset"' in line]
    assert lines and json.loads(lines[-1][lines[-1].index("{") :])["subject"] == "ann"
    exported = admin_api.request("GET", "hub/api/hubforge/audit", params={"user": "ann", "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert exported.headers["Content-Type"].startswith("text/csv") and {r["action"] for r in rows} >= {"signup"}


def test_the_trail_is_read_only_and_for_admins_only(live, admin, admin_api):
    _, ann_api = approved_user(live, admin, "bert")
    assert ann_api.request("GET", "hub/api/hubforge/audit").status_code == 403
    for method in ("DELETE", "PUT", "POST", "PATCH"):
        assert admin_api.request(method, "hub/api/hubforge/audit").status_code == 405
    bad = admin_api.request("GET", "hub/api/hubforge/audit", params={"action": "nope"})
    assert bad.status_code == 400 and "action='nope' is not an audited action" in bad.json()["message"]
    page = admin.http.get(admin.url("hub/hubforge/audit"), params={"user": "bert"}, timeout=30)
    assert page.status_code == 200 and "<td>signup</td>" in page.text
