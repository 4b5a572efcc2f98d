"""Group policies in Chromium (issue 28): an admin sets a group's memory on /hub/hubforge/policies, and the member's
next lab has it, read from inside the lab."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ..support.livestack import ADMIN, PASSWORD
from .pages import LoginPage, PoliciesPage

pytestmark = pytest.mark.e2e
MIB = 2**20
MEMORY_LIMIT = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"


def lab_memory(live, name: str) -> int:
    result = live.lab(name).exec_run(["sh", "-c", MEMORY_LIMIT], user="lab")
    assert result.exit_code == 0, result.output
    return int(result.output.decode().strip())


def test_an_admin_edits_a_groups_memory_and_the_members_next_lab_has_it(live, make_user, admin_http, page):
    member = make_user("pia")
    LoginPage(page, live.url).login(ADMIN, PASSWORD)
    policies = PoliciesPage(page, live.url)
    expect(policies.set_memory("analysts", "448M")).to_contain_text("Saved the policy of analysts")
    added = admin_http.api("POST", "groups/analysts/users", json={"users": ["pia"]})
    assert added.status_code == 200, added.text
    member.start("pia")
    assert lab_memory(live, "pia") == 448 * MIB

    saved = policies.set_memory("analysts", "576M")  # the group exists now: its Edit button fills the form
    expect(saved).to_contain_text("Running labs told to restart to apply it: pia")
    assert lab_memory(live, "pia") == 448 * MIB  # applies at the next start, not to the running lab
    member.stop("pia")
    member.start("pia")
    assert lab_memory(live, "pia") == 576 * MIB
    member.stop("pia")
