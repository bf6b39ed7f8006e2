"""Accounts, roles and sign-in: local passwords, Hugging Face OAuth roles, dev mode."""

from __future__ import annotations

import pytest

import annotations as store
from annotations.accounts import (
    AuthError,
    Identity,
    authenticate,
    make_dev_identity,
    make_oauth_identity,
    register_accounts,
    require_reviewer,
    require_writer,
)
from core.config import load_settings, parse_users


def test_accounts_and_roles_come_from_the_environment():
    auth = load_settings({"SLUDGELENS_USERS": "alice:pa:ss:labeler, rita:pw:reviewer, vic:pw:viewer, bob:pw",
                          "SLUDGELENS_ROLES": "ana:reviewer", "SPACE_ID": "me/app", "OAUTH_CLIENT_ID": "x"}).auth
    assert [(u.name, u.password, u.role) for u in auth.users] == [
        ("alice", "pa:ss", "labeler"), ("rita", "pw", "reviewer"), ("vic", "pw", "viewer"), ("bob", "pw", "labeler")]
    assert auth.oauth and dict(auth.oauth_roles) == {"ana": "reviewer"} and auth.oauth_default_role == "viewer"
    assert not load_settings({"SPACE_ID": "me/app"}).auth.oauth          # a Space without hf_oauth
    assert "password" not in repr(auth.users[0]) and "pa:ss" not in repr(auth.users[0])
    with pytest.raises(ValueError, match="name:role"):
        load_settings({"SLUDGELENS_DEV_USER": "dev:admin"})
    with pytest.raises(ValueError):
        parse_users("nopassword")


def test_a_password_signs_in_and_anything_else_is_refused():
    auth = load_settings({"SLUDGELENS_USERS": "alice:secret:labeler"}).auth
    assert authenticate(auth, "alice", "secret") == Identity("alice", "labeler", "password")
    for name, password in (("alice", "Secret"), ("alice", ""), ("", "secret"), ("eve", "secret"), (None, None)):
        with pytest.raises(AuthError):
            authenticate(auth, name, password)


def test_roles_decide_who_may_write_and_review():
    auth = load_settings({"SLUDGELENS_ROLES": "ana:reviewer,ben:labeler", "SPACE_ID": "s", "OAUTH_CLIENT_ID": "c"}).auth
    ana, ben, anyone = (make_oauth_identity(auth, n) for n in ("ana", "ben", "someone"))
    assert (ana.role, ben.role, anyone.role) == ("reviewer", "labeler", "viewer")
    assert require_writer(ben) is ben and require_reviewer(ana) is ana
    with pytest.raises(AuthError, match="viewer"):
        require_writer(anyone)
    with pytest.raises(AuthError, match="Sign in"):
        require_writer(None)
    with pytest.raises(AuthError, match="reviewer"):
        require_reviewer(ben)


def test_accounts_and_the_dev_user_become_labelers_in_the_store(tmp_path):
    auth = load_settings({"SLUDGELENS_USERS": "alice:pw:labeler,vic:pw:viewer",
                          "SLUDGELENS_DEV_USER": "dev:reviewer"}).auth
    db = store.open_store(tmp_path / "s.db", tmp_path / "media")
    register_accounts(db, auth)
    roles = {r["name"]: r["role"] for r in db["labelers"].rows if r["kind"] == "human"}
    assert roles == {"alice": "labeler", "vic": "viewer", "dev": "reviewer"}
    assert make_dev_identity(auth) == Identity("dev", "reviewer", "dev")
