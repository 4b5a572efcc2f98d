"""What every hub setting's parser shares: the error a bad value raises, and the on/off flag."""

from __future__ import annotations

import re
from collections.abc import Mapping

USERNAME = re.compile(
    r"^[^\s/]{1,64}$"
)  # what a setting may name as a user; signup's full rules are hub_ext.web.accounts'


class ConfigError(ValueError):
    """A bad environment value; str() is the one line the hub prints before refusing to start."""


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off setting: 1/0, true/false, yes/no, on/off; empty: the default."""
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={env[name]!r} is not valid; use 1 or 0")
