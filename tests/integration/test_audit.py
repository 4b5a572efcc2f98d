"""People and the audit trail on a live stack (issue 29, parts 1 and 3), one stack for both: batch creation with
generated passphrases, the password a made or reset account must replace before anything opens, an admin's reset that
ends the old sessions; and each audited action leaves a record with who, whom, what, when and from where, in the hub's
database (the API and page read it) and as a JSON line in the hub's log."""

from __future__ import annotations

import csv
import io
import json
import time

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
    assert session.api("POST", "hubforge/users/ann/volumes/reset", json={"volumes": ["cache"]}).status_code == 200
    reset = admin.http.post(
        admin.url("hub/change-password/ann"),
        timeout=60,
        data={
            "_xsrf": admin.xsrf("hub/change-password/ann"),
            "new_password": "Third-passw0rd!",
            "new_password_confirmation": "Third-passw0rd!",
        },
    )
    assert reset.status_code == 200 and "must choose their own" in reset.text
    assert admin_api.request("PUT", "hub/api/hubforge/policies/team", json={"mem_limit": "1G"}).status_code == 201
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


def passphrase_kept_in_clear(live, passphrase: str) -> bool:
    """Whether the passphrase's text is anywhere in the hub's database files or its log."""
    probe = (
        "import pathlib, sys; "
        "print(any(sys.argv[1].encode() in p.read_bytes() for p in pathlib.Path('/srv/jupyterhub/data').glob('*')"
        " if p.is_file()))"
    )
    found = live.hub().exec_run(["python3", "-c", probe, passphrase]).output.decode().strip()
    assert found in ("True", "False"), found
    return found == "True" or passphrase in live.hub().logs(tail=5000).decode()


def test_a_batch_makes_the_good_lines_lists_the_bad_and_shows_each_passphrase_once(live, admin, admin_api):
    assert admin_api.request("POST", "hub/api/groups/research").status_code == 201
    text = "cara research\nbad/name\ncara\ndev students\n" + ADMIN + "\n# a comment\neli"
    made = admin_api.request("POST", "hub/api/hubforge/people", json={"text": text})
    assert made.status_code == 201, made.text
    created = {c["name"]: c for c in made.json()["created"]}
    assert set(created) == {"cara", "eli"} and created["cara"]["groups"] == ["research"]
    refused = {r["line"]: r["reason"] for r in made.json()["refused"]}
    assert set(refused) == {2, 3, 4, 5}, refused
    assert "slash" in refused[2] and "already on line 1" in refused[3]
    assert "no group 'students'" in refused[4] and "admin" in refused[5]
    assert "research" in [g for g in admin_api.user("cara")["groups"]]
    # a CSV file, with the missing group made this time
    csv_made = admin_api.request(
        "POST", "hub/api/hubforge/people", json={"text": "name,groups\nfay,students\n", "create_groups": True}
    )
    assert csv_made.status_code == 201 and csv_made.json()["created"][0]["groups"] == ["students"]
    # all bad: nobody made, one line
    none = admin_api.request("POST", "hub/api/hubforge/people", json={"text": "cara\n"})
    assert none.status_code == 400 and none.json()["message"] == "nobody was created: 1 line refused"
    _, other = approved_user(live, admin, "gus")
    assert other.request("POST", "hub/api/hubforge/people", json={"text": "x"}).status_code == 403
    # approved, and the passphrase is only a hash in the hub
    listing = {p["name"]: p for p in admin_api.request("GET", "hub/api/hubforge/people").json()["people"]}
    assert listing["cara"]["approved"] and listing["cara"]["password_due"] and not listing["gus"]["password_due"]
    assert not passphrase_kept_in_clear(live, created["cara"]["password"])
    assert admin.http.get(admin.url("hub/hubforge/people"), timeout=30).status_code == 200
    (made_cara,) = [r for r in records(admin_api, action="batch-create") if r["subject"] == "cara"]
    assert made_cara["actor"] == ADMIN and made_cara["detail"] == {"groups": ["research"]} and made_cara["address"]


def test_a_made_account_must_choose_its_password_before_its_lab_opens(live, admin, admin_api):
    passphrase = admin_api.request("POST", "hub/api/hubforge/people", json={"text": "hal"}).json()["created"][0][
        "password"
    ]
    hal = HubSession(live.url)
    assert hal.login("hal", passphrase).status_code == 302
    home = hal.http.get(hal.url("hub/home"), timeout=30)
    assert home.url.split("?")[0].endswith("/hub/change-password") and "choose a password of your own" in home.text
    spawn = hal.api("POST", "users/hal/server")
    assert spawn.status_code == 403 and "choose your own password first" in spawn.json()["message"]
    assert not admin_api.user("hal")["servers"]
    token = hal.http.post(
        hal.url("hub/api/users/hal/tokens"), json={"auth": {"username": "hal", "password": passphrase}}, timeout=30
    )
    assert token.status_code == 403  # no way around it with a token made from the password
    form = {"_xsrf": hal.xsrf("hub/change-password"), "old_password": passphrase}
    same = hal.http.post(
        hal.url("hub/change-password"),
        data={**form, "new_password": passphrase, "new_password_confirmation": passphrase},
        timeout=60,
    )
    assert "not the one you were given" in same.text
    done = hal.http.post(
        hal.url("hub/change-password"),
        data={**form, "new_password": "Hals-own-passw0rd", "new_password_confirmation": "Hals-own-passw0rd"},
        timeout=60,
    )
    assert done.status_code == 200 and "/hub/change-password" not in done.url
    started = hal.api("POST", "users/hal/server")  # the change led on to where the login went: maybe the spawn page
    assert started.status_code in (201, 202) or "already running" in started.text, started.text
    admin_api.wait_ready("hal")
    admin_api.stop("hal")
    assert HubSession(live.url).login("hal", "Hals-own-passw0rd").status_code == 302


def test_an_admins_reset_ends_the_old_sessions_and_tokens(live, admin, admin_api):
    rita, rita_api = approved_user(live, admin, "rita")
    assert rita_api.request("GET", "hub/api/user").status_code == 200
    reset = admin_api.request("POST", "hub/api/hubforge/people/rita/password-reset")
    assert reset.status_code == 200, reset.text
    answer = reset.json()
    assert answer["tokens_ended"] >= 1 and len(answer["password"]) >= 20
    assert rita_api.request("GET", "hub/api/user").status_code == 403  # the old token
    old_session = rita.http.get(rita.url("hub/home"), timeout=30)
    assert "/hub/login" in old_session.url  # the old cookie
    assert HubSession(live.url).login("rita", PASSWORD).status_code != 302  # the old password
    again = HubSession(live.url)
    assert again.login("rita", answer["password"]).status_code == 302
    assert again.http.get(again.url("hub/home"), timeout=30).url.split("?")[0].endswith("/hub/change-password")
    (recorded,) = [r for r in records(admin_api, action="password-reset") if r["subject"] == "rita"]
    assert recorded["actor"] == ADMIN and recorded["detail"]["generated"] is True
    assert answer["password"] not in json.dumps(recorded)
    assert admin_api.request("POST", "hub/api/hubforge/people/nobody/password-reset").status_code == 404
    assert admin_api.request("POST", f"hub/api/hubforge/people/{ADMIN}/password-reset").status_code == 400


def test_jupyterhubs_own_user_group_and_token_calls_are_recorded(live, admin, admin_api):
    assert admin_api.request("POST", "hub/api/users/zed").status_code == 201
    assert admin_api.request("POST", "hub/api/groups/lab-team/users", json={"users": ["zed"]}).status_code == 404
    assert admin_api.request("POST", "hub/api/groups/lab-team", json={"users": []}).status_code == 201
    assert admin_api.request("POST", "hub/api/groups/lab-team/users", json={"users": ["zed"]}).status_code == 200
    assert admin_api.request("DELETE", "hub/api/groups/lab-team/users", json={"users": ["zed"]}).status_code == 200
    made = admin_api.request("POST", "hub/api/users/zed/tokens", json={"note": "ci", "expires_in": 600})
    assert made.status_code == 201
    assert admin_api.request("DELETE", "hub/api/users/zed").status_code == 204
    time.sleep(0.2)
    about_zed = [(r["action"], r["detail"]) for r in records(admin_api, user="zed")]
    actions = [action for action, _ in about_zed]
    assert actions[::-1] == ["user-create", "token-create", "delete"], about_zed
    assert {"note": "ci", "expires_in": 600} == dict(about_zed[1][1])
    assert made.json()["token"] not in json.dumps(about_zed)
    group = [r["detail"] for r in records(admin_api, action="group-change") if r["subject"] == "lab-team"]
    assert group[::-1] == [{"created": True, "users": []}, {"added": ["zed"]}, {"removed": ["zed"]}]
    # a built-in group deleted is made again, empty (its rights stay defined for the members an admin adds)
    assert admin_api.request("DELETE", "hub/api/groups/docker-sock").status_code == 204
    again = admin_api.request("GET", "hub/api/groups/docker-sock")
    assert again.status_code == 200 and again.json()["users"] == []
    assert records(admin_api, action="group-change")[0]["detail"] == {"deleted": True}


def test_approval_decisions_and_throttling_are_recorded(live, admin, admin_api):
    def act(name: str, action: str, **fields: str):
        data = {"_xsrf": admin.xsrf("hub/authorize"), **fields}
        url = admin.url(f"hub/authorize/{name}/{action}")
        return admin.http.post(url, data=data, allow_redirects=False, timeout=60)

    approved_user(live, admin, "uma")
    assert act("uma", "unapprove").status_code == 302
    assert act("uma", "discard", confirm="uma").status_code == 302
    by_admin = [r["action"] for r in records(admin_api, user="uma") if r["actor"] == ADMIN]
    assert by_admin == ["discard", "unapprove", "approve"], by_admin
    # six wrong passwords for one account from one address: the sixth is throttled (LOGIN_MAX_FAILURES, 5)
    guesser = HubSession(live.url)
    answers = [guesser.login("vic-nobody", f"wrong-{n}").status_code for n in range(6)]
    assert answers[-1] == 429, answers
    (throttled,) = records(admin_api, action="throttled", user="vic-nobody")
    assert throttled["actor"] == "-" and throttled["detail"]["purpose"] == "login" and throttled["address"]
