"""Admins do not open other users' labs unless LAB_ADMIN_ACCESS=1 (hub_ext.web.labaccess), with a real hub database."""

from __future__ import annotations

import pytest
from jupyterhub import orm

from hub_ext.settings.hub import from_environ
from hub_ext.web.labaccess import is_shared, refusal


@pytest.fixture
def db():
    return orm.new_session_factory("sqlite:///:memory:")()


@pytest.fixture
def people(db):
    admin = orm.User(name="admin", admin=True)
    alice = orm.User(name="alice")
    carol = orm.User(name="carol")
    db.add_all([admin, alice, carol])
    db.commit()
    lab = orm.Spawner(user=alice, name="")
    own = orm.Spawner(user=admin, name="")
    db.add_all([lab, own])
    db.commit()
    return admin, alice, carol, lab, own


def test_an_admin_is_refused_another_users_lab(db, people):
    admin, alice, _, lab, _ = people
    reason = refusal(admin, lab, admin_access=False, shared=is_shared(db, admin, lab))
    assert reason and "Admins do not open other users' servers" in reason and "LAB_ADMIN_ACCESS=1" in reason
    assert "alice" in reason


def test_the_setting_lets_admins_in(db, people):
    admin, _, _, lab, _ = people
    assert refusal(admin, lab, admin_access=True, shared=False) is None


def test_owners_and_non_admins_are_not_concerned(db, people):
    admin, alice, carol, lab, own = people
    assert refusal(alice, lab, admin_access=False, shared=False) is None  # her own lab
    assert refusal(admin, own, admin_access=False, shared=False) is None  # the admin's own lab
    assert refusal(carol, lab, admin_access=False, shared=False) is None  # JupyterHub decides for non-admins
    assert refusal(admin, None, admin_access=False, shared=False) is None  # a service's OAuth client, not a lab


def test_a_server_shared_with_the_admin_opens(db, people):
    admin, alice, _, lab, _ = people
    assert not is_shared(db, admin, lab)
    db.add(orm.Share(owner=alice, spawner=lab, user=admin, scopes=["access:servers!server=alice/"]))
    db.commit()
    assert is_shared(db, admin, lab)
    assert refusal(admin, lab, admin_access=False, shared=is_shared(db, admin, lab)) is None


def test_a_share_with_a_group_of_the_admin_counts(db, people):
    admin, alice, _, lab, _ = people
    group = orm.Group(name="helpers")
    group.users.append(admin)
    db.add(group)
    db.add(orm.Share(owner=alice, spawner=lab, group=group, scopes=["access:servers!server=alice/"]))
    db.commit()
    assert is_shared(db, admin, lab)


def test_setting_default_and_check():
    assert from_environ({}).lab_admin_access is False
    assert from_environ({"LAB_ADMIN_ACCESS": "1"}).lab_admin_access is True
    with pytest.raises(ValueError, match="LAB_ADMIN_ACCESS='yes please' is not valid"):
        from_environ({"LAB_ADMIN_ACCESS": "yes please"})
