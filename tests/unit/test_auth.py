"""Account bootstrap: no unusable admin account on a fresh hub, an initial admin password, admin-added users."""

from __future__ import annotations

import pytest
from jupyterhub import orm

from hub_ext.authenticators.native import HubforgeAuthenticator
from hub_ext.web.selfservice import default_handlers


@pytest.fixture
def db():
    return orm.new_session_factory("sqlite:///:memory:")()


def make(db, **config) -> HubforgeAuthenticator:
    return HubforgeAuthenticator(_deprecated_db_session=db, admin_users={"admin"}, **config)


class NewUser:
    def __init__(self, name):
        self.name = name


def test_a_fresh_admin_without_password_can_still_sign_up(db):
    auth = make(db)
    auth.add_user(NewUser("admin"))  # what JupyterHub does for admin_users at its first start
    assert auth.get_user("admin") is None  # no row: the admin's own signup is still possible
    auth.create_user("admin", "a-good-pass-9")
    assert auth.get_user("admin").is_authorized  # and is approved at once


def test_admin_password_makes_an_approved_admin(db):
    auth = make(db, admin_password="initial-Secret-42")
    auth.add_user(NewUser("admin"))
    account = auth.get_user("admin")
    assert account.is_authorized and account.is_valid_password("initial-Secret-42")
    assert not account.is_valid_password("wrong")


def test_users_added_by_an_admin_get_an_approved_account_without_a_known_password(db):
    auth = make(db)
    auth.add_user(NewUser("first.last"))
    account = auth.get_user("first.last")
    assert account.is_authorized
    assert not account.is_valid_password("") and not account.is_valid_password("first.last")


def test_hub_ext_routes_do_not_touch_jupyterhubs_user_api(db):
    routes = [route for route, _ in make(db).get_handlers(None)]
    assert {route for route, _ in default_handlers} <= set(routes)
    assert all(not r.startswith("/api/users") for r, _ in default_handlers)
    assert "/signup" in routes and "/authorize" in routes


class OldUser(NewUser):
    """A user already in the hub's database when it started (JupyterHub calls add_user for each one)."""

    def __init__(self, name):
        super().__init__(name)
        from datetime import datetime

        self.created = datetime(2020, 1, 1)


def test_a_restart_never_makes_an_account_for_a_user_without_one(db):
    """A discarded user's hub row used to come back at the next start as an approved account."""
    auth = make(db)
    auth.add_user(OldUser("discarded"))
    assert auth.get_user("discarded") is None


def test_a_restart_keeps_an_unapproved_account_unapproved(db):
    auth = make(db)
    auth.store_account("pending", "a-Long-passw0rd!", approved=False)
    auth.add_user(OldUser("pending"))
    assert auth.get_user("pending").is_authorized is False


def test_nativeauthenticators_own_lockout_is_off(db):
    assert make(db).allowed_failed_logins == 0


def test_password_hashing_runs_below_the_event_loop():
    """bcrypt's worker threads run at nice +10, so the hub's event loop is scheduled first on a busy host."""
    import os
    import threading

    from hub_ext.auth.passwords import HASHING, HASHING_NICENESS

    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    niceness = HASHING.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(10)
    assert niceness == HASHING_NICENESS
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the caller's thread is unchanged
