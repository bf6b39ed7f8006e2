"""Who is writing a label: local accounts, Hugging Face OAuth on a Space, or an explicit dev mode.

Anyone may analyze a video. Writing a label needs an :class:`Identity` whose role allows it; the store
checks the role again on every write (``annotations.writes``), so an identity is a claim the UI and the
API make on a person's behalf, never a bypass. The accounts themselves are settings
(``core.config.AuthConfig``).

    auth = load_settings().auth
    me = authenticate(auth, "alice", "secret")      # Identity(name='alice', role='labeler', via='password')
    me = make_oauth_identity(auth, "hf-user")            # role from SLUDGELENS_ROLES, else the default role
    register_identity(db, me)                       # the store knows the labeler and its role
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from annotations.writes import add_labeler
from core.config import AuthConfig
from core.vocabulary import WRITE_ROLES


class AuthError(PermissionError):
    """Not signed in, a wrong password, or a role that may not do this; the message says which."""


@dataclass(frozen=True)
class Identity:
    """A signed-in person: their labeler name in the store, their role, and how they signed in."""

    name: str
    role: str
    via: str  # "password", "oauth" or "dev"

    @property
    def can_write(self) -> bool:
        return self.role in WRITE_ROLES

    @property
    def can_review(self) -> bool:
        return self.role == "reviewer"

    def describe(self) -> str:
        """One line for the UI, e.g. "alice (labeler)".

        >>> Identity("alice", "labeler", "password").describe()
        'alice (labeler)'
        """
        return f"{self.name} ({self.role}{', dev mode' if self.via == 'dev' else ''})"


def authenticate(auth: AuthConfig, name: str | None, password: str | None) -> Identity:
    """The local account `name` if `password` matches; raises AuthError otherwise (same message either way).

    >>> authenticate(AuthConfig(users=(UserSpec("alice", "pw", "labeler"),)), "alice", "pw").role  # doctest: +SKIP
    'labeler'
    """
    if not name or not password:
        raise AuthError("Sign in first: this needs a user name and password (see SLUDGELENS_USERS).")
    found = None
    for user in auth.users:
        # Compare every account in constant time, so timing says nothing about which names exist.
        name_ok = hmac.compare_digest(user.name.encode(), str(name).encode())
        password_ok = hmac.compare_digest(user.password.encode(), str(password).encode())
        if name_ok and password_ok:
            found = user
    if found is None:
        raise AuthError("Wrong user name or password. Nothing was written.")
    return Identity(found.name, found.role, "password")


def make_oauth_identity(auth: AuthConfig, username: str | None) -> Identity:
    """The identity of a Hugging Face user who signed in with OAuth.

    >>> make_oauth_identity(AuthConfig(oauth=True, oauth_roles=(("ana", "reviewer"),)), "ana").role
    'reviewer'
    """
    if not username:
        raise AuthError("Sign in with Hugging Face first.")
    roles = dict(auth.oauth_roles)
    return Identity(username, roles.get(username, auth.oauth_default_role), "oauth")


def make_dev_identity(auth: AuthConfig) -> Identity | None:
    """The dev-mode identity (SLUDGELENS_DEV_USER), or None when dev mode is off.

    >>> make_dev_identity(AuthConfig()) is None
    True
    """
    if auth.dev_user is None:
        return None
    return Identity(auth.dev_user.name, auth.dev_user.role, "dev")


def require_writer(identity: Identity | None) -> Identity:
    """The identity, if it may write labels; raises AuthError with what to do otherwise.

    >>> require_writer(Identity("vic", "viewer", "oauth"))
    Traceback (most recent call last):
    ...
    annotations.accounts.AuthError: vic is a viewer: viewers can analyze and look, but not write labels.
    """
    if identity is None:
        raise AuthError("Sign in to label: nothing was written.")
    if not identity.can_write:
        raise AuthError(f"{identity.name} is a {identity.role}: viewers can analyze and look, but not write labels.")
    return identity


def require_reviewer(identity: Identity | None) -> Identity:
    """The identity, if it may accept or reject labels; raises AuthError otherwise.

    >>> require_reviewer(Identity("rita", "reviewer", "password")).name
    'rita'
    """
    if identity is None or not identity.can_review:
        who = "Nobody is signed in" if identity is None else f"{identity.name} is a {identity.role}"
        raise AuthError(f"{who}: accepting or rejecting labels needs a reviewer.")
    return identity


def register_identity(db, identity: Identity) -> Identity:
    """Make the store know this labeler with this role (its role follows the configuration).

    >>> register_identity(db, Identity("alice", "labeler", "password"))  # doctest: +SKIP
    """
    add_labeler(db, identity.name, identity.role)
    return identity


def register_accounts(db, auth: AuthConfig) -> list[Identity]:
    """Register every configured local account and the dev user in the store; returns them.

    >>> [i.name for i in register_accounts(db, load_settings().auth)]  # doctest: +SKIP
    ['alice', 'rita']
    """
    identities = [Identity(u.name, u.role, "password") for u in auth.users]
    dev = make_dev_identity(auth)
    if dev is not None:
        identities.append(dev)
    return [register_identity(db, i) for i in identities]
