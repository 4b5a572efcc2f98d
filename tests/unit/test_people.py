"""People made by an admin (issue 29, part 1): the batch's reading, the passphrases, the mark that makes an account
choose its own password, and what the password gate lets through."""

from __future__ import annotations

import re

from hub_ext.auth.people import BATCH_MAX, DUE, DueStore, PasswordDue, generate_passphrase, parse_batch
from hub_ext.hub.passwordgate import gated


def test_a_pasted_list_gives_names_and_groups_and_skips_blanks_and_comments():
    batch = parse_batch("ada research\n\n# the new class\ngrace students, research\nalan\n  bob  students students\n")
    assert [(e.line, e.name, e.groups) for e in batch.entries] == [
        (1, "ada", ("research",)),
        (4, "grace", ("students", "research")),
        (5, "alan", ()),
        (6, "bob", ("students",)),
    ]
    assert batch.refused == []


def test_a_csv_file_with_a_header_is_read_by_its_columns():
    text = 'email,name,groups\nada@x.org,ada,"research;students"\nno-name@x.org,,\n,alan,\n'
    batch = parse_batch(text)
    assert [(e.name, e.groups) for e in batch.entries] == [("ada", ("research", "students")), ("alan", ())]
    assert batch.refused == [{"line": 3, "text": "no-name@x.org,,", "reason": "no name in the name column"}]


def test_a_pasted_line_with_commas_is_not_taken_for_a_csv_header():
    batch = parse_batch("ada,research\ngrace,students")
    assert [(e.name, e.groups) for e in batch.entries] == [("ada", ("research",)), ("grace", ("students",))]


def test_a_batch_beyond_its_size_refuses_the_rest_by_line():
    batch = parse_batch("\n".join(f"user{n}" for n in range(BATCH_MAX + 2)))
    assert len(batch.entries) == BATCH_MAX
    assert [r["line"] for r in batch.refused] == [BATCH_MAX + 1, BATCH_MAX + 2]
    assert "at most" in batch.refused[0]["reason"]


def test_passphrases_are_long_random_and_readable():
    phrases = {generate_passphrase() for _ in range(200)}
    assert len(phrases) == 200
    for phrase in phrases:
        assert re.fullmatch(r"[a-z2-9]{5}(-[a-z2-9]{5}){3}", phrase)
        assert not set(phrase) & set("01ilo")


def test_the_mark_is_kept_in_the_database_and_read_back_by_a_new_store(db):
    DUE.mark(db, "ada", "batch-create")
    assert DUE.is_due(db, "ada") and not DUE.is_due(db, "grace")
    assert db.get(PasswordDue, "ada").reason == "batch-create"
    assert DueStore().is_due(db, "ada")  # a restarted hub reads the table
    DUE.mark(db, "ada", "password-reset")  # marked twice: one row, the newer reason
    assert db.query(PasswordDue).count() == 1 and db.get(PasswordDue, "ada").reason == "password-reset"
    assert DUE.clear(db, "ada") and not DUE.is_due(db, "ada")
    assert not DueStore().is_due(db, "ada") and not DUE.clear(db, "ada")


def test_the_gate_lets_a_marked_account_only_change_its_password_or_leave():
    for path in ("/hub/change-password", "/hub/logout", "/hub/login", "/hub/static/js/x.js", "/hub/health"):
        assert gated("GET", path, "/") is None, path
    assert gated("POST", "/hub/change-password", "/") is None
    for path in ("/hub/home", "/hub/spawn", "/hub/token", "/user/ada/lab", "/hub/hubforge/volumes"):
        assert gated("GET", path, "/") == "redirect", path
    for method, path in (
        ("GET", "/hub/api/oauth2/authorize"),  # the step that opens a lab
        ("POST", "/hub/api/users/ada/server"),
        ("POST", "/hub/api/users/ada/tokens"),
        ("POST", "/hub/spawn"),
        ("GET", "/hub/change-password/grace"),  # an admin's page for another account
    ):
        assert gated(method, path, "/") == "refuse", (method, path)
    assert gated("GET", "/base/hub/home", "/base/") == "redirect"
    assert gated("GET", "/base/hub/change-password", "/base/") is None
