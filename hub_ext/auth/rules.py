"""Account rules, whoever asks (a page, the API, an authenticator): which usernames and passwords are accepted,
how a name is written into a log line, the admin's one-time bootstrap secret, and how a user's credentials end."""

from __future__ import annotations

import hmac
import re
import secrets
import unicodedata
from pathlib import Path

from jupyterhub import orm
from jupyterhub.utils import new_token

from hub_ext.naming import CANARY_USER, escape_username

USERNAME_MAX = 64
# Every accepted name must spawn: the escaped form goes into container and volume names
# (`<prefix>-<escaped>_workspace`, at most 255 bytes with a prefix of up to 64).
ESCAPED_MAX = 128
_FORBIDDEN = re.compile(r"[\s,/\\]")


def _invisible(name: str) -> tuple[str, str] | None:
    """The first character that a page or a terminal would not show as itself: control characters
    (ESC reaches an operator's terminal through `invoke logs`), format characters such as a zero-width
    space (`admin` + U+200B looks like `admin`), private-use, unassigned and surrogate code points."""
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc":
            return char, "a control character"
        if category == "Cf":
            return char, "an invisible formatting character"
        if category in ("Co", "Cn", "Cs"):
            return char, "an unassigned or private-use character"
    return None


def loggable(text: str) -> str:
    """`text` as a log line may carry it: every character that is not printable (controls such as ESC or a newline,
    format characters such as a zero-width space, separators other than the space, unassigned code points) and
    the backslash become Python escapes. A name typed at the login form cannot colour or clear an operator's
    terminal (`invoke logs`), forge a log line, or hide a character in a look-alike of another name."""
    return "".join(
        char if char.isprintable() and char != "\\" else char.encode("unicode_escape").decode("ascii") for char in text
    )


def username_problem(name: str, reserved_too: bool = True) -> str | None:
    """Why a signup name is refused, naming the rule; None when it is fine.

    `name` is the normalised form (NFKC, lower case) that the hub stores and shows. `reserved_too`: hubforge's own
    account names are refused too (a person signing up, a batch, a provider's name); the REST API, through which the
    upgrade's canary is made, checks the form only."""
    if not name:
        return "Choose a username."
    if reserved_too and name == CANARY_USER:
        return f"The name {CANARY_USER} is hubforge's own (an upgrade's test account); choose another."
    if len(name) > USERNAME_MAX:
        return f"Usernames are at most {USERNAME_MAX} characters (this one has {len(name)})."
    hidden = _invisible(name)
    if hidden:
        char, kind = hidden
        return f"Usernames cannot contain invisible characters; this one contains {kind} (U+{ord(char):04X})."
    bad = _FORBIDDEN.search(name)
    if bad:
        shown = {" ": "a space", ",": "a comma", "/": "a slash", "\\": "a backslash"}.get(bad.group(), "white space")
        return f"Usernames cannot contain spaces, commas or slashes; {name!r} contains {shown}."
    escaped = len(escape_username(name))
    if escaped > ESCAPED_MAX:
        return (
            f"This username is too long once made safe for container and volume names ({escaped} of at most "
            f"{ESCAPED_MAX} characters; each character other than a-z and 0-9 takes 3 to 12); choose a shorter one."
        )
    return None


def password_problem(password: str, confirmation: str, minimum: int, common: bool) -> str | None:
    """Why a password is refused, naming the rule; None when it is fine."""
    if not password:
        return "The password is empty."
    if len(password) < minimum:
        return f"Passwords need at least {minimum} characters (this one has {len(password)})."
    if common:
        return "This password is on the list of common passwords; choose another."
    if password != confirmation:
        return "The password and its confirmation differ."
    return None


class BootstrapSecret:
    """The one-time secret the admin's first signup needs. It lives only in the hub's data volume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self) -> str:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(secrets.token_urlsafe(18) + "\n")
            self.path.chmod(0o600)
        return self.path.read_text().strip()

    def matches(self, offered: str) -> bool:
        return self.path.exists() and hmac.compare_digest(offered.strip(), self.path.read_text().strip())

    def consume(self) -> None:
        self.path.unlink(missing_ok=True)


def end_credentials(db, user) -> list:
    """Every API and OAuth token of the user deleted and every login cookie void (they name the old cookie id),
    committed at once; returns the tokens deleted."""
    tokens = list(user.api_tokens)
    for token in tokens:
        db.delete(token)
    for code in db.query(orm.OAuthCode).filter_by(user_id=user.id):
        db.delete(code)
    user.orm_user.cookie_id = new_token()
    db.commit()
    return tokens
