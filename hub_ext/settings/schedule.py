"""BACKUP_SCHEDULE: when the stack's backup service takes a snapshot, as data, and the next time it is due (UTC)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from hub_ext.settings.parse import ConfigError

OFF = "off"
# Seconds are for tests and trials: a snapshot every few seconds keeps restic's repository locked all the time.
MINIMUM_SECONDS = 10
_DAILY = re.compile(r"^daily(?:\s+(\d{1,2}):(\d{2}))?$")
_EVERY = re.compile(r"^every\s+([1-9]\d*)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HINT = "use off, hourly, daily, daily HH:MM (UTC), or every N followed by m, h or d (e.g. every 6h)"


@dataclass(frozen=True)
class Schedule:
    """Off, a time of day (UTC), or an interval whose slots are whole multiples of it since the epoch (every 6h: at
    00:00, 06:00, 12:00 and 18:00 UTC), so that a restarted service keeps the same slots."""

    interval: int = 0  # seconds between slots; 0: off
    daily_at: tuple[int, int] | None = None  # (hour, minute) UTC, for `daily`

    @property
    def on(self) -> bool:
        return self.interval > 0

    @property
    def text(self) -> str:
        """The normalised setting: what parse() reads back to the same schedule."""
        if not self.on:
            return OFF
        if self.daily_at is not None:
            return f"daily {self.daily_at[0]:02d}:{self.daily_at[1]:02d}"
        for unit in "dhm":
            if self.interval % _UNITS[unit] == 0:
                return f"every {self.interval // _UNITS[unit]}{unit}"
        return f"every {self.interval}s"

    def describe(self) -> str:
        """What `invoke status` and the docs say: `every day at 02:30 UTC`, `every 6 hours`, `off`."""
        if not self.on:
            return "off"
        if self.daily_at is not None:
            return f"every day at {self.daily_at[0]:02d}:{self.daily_at[1]:02d} UTC"
        count, unit = self.text.removeprefix("every ")[:-1], self.text[-1]
        name = {"s": "second", "m": "minute", "h": "hour", "d": "day"}[unit]
        return f"every {name}" if count == "1" else f"every {count} {name}s"

    def next_run(self, now: datetime) -> datetime | None:
        """The first slot strictly after `now` (an aware datetime), or None when off."""
        if not self.on:
            return None
        now = now.astimezone(timezone.utc)
        if self.daily_at is not None:
            slot = now.replace(hour=self.daily_at[0], minute=self.daily_at[1], second=0, microsecond=0)
            return slot if slot > now else slot + timedelta(days=1)
        epoch = int(now.timestamp())
        return datetime.fromtimestamp((epoch // self.interval + 1) * self.interval, timezone.utc)


def parse_schedule(name: str, raw: str) -> Schedule:
    """A schedule from its setting; one line naming `name` when it is not one."""
    value = " ".join(raw.strip().lower().split())
    if value in ("", OFF, "0", "no", "false"):
        return Schedule()
    if value == "hourly":
        return Schedule(3600)
    daily = _DAILY.match(value)
    if daily:
        hour, minute = (int(daily.group(1)), int(daily.group(2))) if daily.group(1) else (0, 0)
        if hour > 23 or minute > 59:
            raise ConfigError(f"{name}={raw!r} is not a time of day; use daily HH:MM with HH 00-23 and MM 00-59 (UTC)")
        return Schedule(86400, (hour, minute))
    every = _EVERY.match(value)
    if not every:
        raise ConfigError(f"{name}={raw!r} is not a schedule; {HINT}")
    seconds = int(every.group(1)) * _UNITS[every.group(2)]
    if seconds < MINIMUM_SECONDS:
        raise ConfigError(f"{name}={raw!r} is too often; the shortest interval is every {MINIMUM_SECONDS}s")
    return Schedule(seconds)
