"""Usernames that cannot be trusted: look-alikes are normalised, invisible characters refused, and every
accepted name fits the container and volume names it becomes."""

from __future__ import annotations

import pytest
from jupyterhub import orm

from hub_ext.auth.rules import ESCAPED_MAX, username_problem
from hub_ext.authenticators.native import HubforgeAuthenticator
from hub_ext.naming import user_names


@pytest.fixture
def auth():
    return HubforgeAuthenticator(
        _deprecated_db_session=orm.new_session_factory("sqlite:///:memory:")(), admin_users={"admin"}
    )


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("ＡＤＭＩＮ", "admin"), ("Ａlice", "alice"), ("ﬁona", "fiona"), ("José", "josé"), ("first.last", "first.last")],
)
def test_look_alikes_become_the_name_they_look_like(auth, typed, stored):
    assert auth.normalize_username(typed) == stored


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("eve\x1b[2J", "a control character (U+001B)"),
        ("bob\x07", "a control character (U+0007)"),
        ("admin\u200b", "an invisible formatting character (U+200B)"),
        ("ad\u2066min", "an invisible formatting character (U+2066)"),
        ("mal\ue000", "private-use"),
        ("a\u00a0b", None),  # no-break space: normalised to a space first (checked below)
    ],
)
def test_invisible_characters_are_refused_naming_the_rule(auth, name, rule):
    problem = username_problem(auth.normalize_username(name))
    if rule is None:
        assert "contains a space" in problem
    else:
        assert problem is not None and rule in problem


def test_every_accepted_name_fits_its_docker_names():
    longest_prefix = "p" * 64
    for name in ["a" * 64, "first.last", "josé-maría", "ü" * 21, "日本語のなまえ", "😀" * 10]:
        if username_problem(name) is None:
            names = user_names(longest_prefix, name)
            assert all(len(v.encode()) <= 255 for v in names.volumes.values()) and len(names.container) <= 255
    assert username_problem("ü" * 21) is None  # 21 × 6 = 126 escaped characters: still fine
    too_long = username_problem("ü" * 22)  # 132 > 128
    assert too_long and f"at most {ESCAPED_MAX}" in too_long
    assert "too long" in username_problem("😀" * 11)


def test_an_admin_cannot_add_through_the_api_what_signup_refuses(auth):
    assert auth.validate_username("alice")
    assert not auth.validate_username("admin\u200b")
    assert not auth.validate_username("ü" * 30)


def test_the_upgrades_canary_name_is_nobodys_to_take():
    """`invoke upgrade`'s canary creates, starts and then deletes this account with its volumes: a person who held
    the name would lose both."""
    assert "hubforge's own" in username_problem("hubforge-canary")
    assert username_problem("hubforge-canary2") is None
