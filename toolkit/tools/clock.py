"""``get_current_time()``: the current date and time, timezone-aware.

    2026-12-05T00:55:49+00:00 (Saturday, 00:55 UTC)

The hour and minute stand again in the parenthesis, next to the weekday and the zone: with the ISO
stamp alone there, the shipped default model answered "What time is it now?" with "Saturday, UTC" at
19 of 35 moments (a week, five hours a day); with "HH:MM zone" beside it, at none (README, "The default
models"). The demo's training data (``train.demo_data._clock_text``) still writes the older form.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from toolkit.tool import Tool


class CurrentTimeTool(Tool):
    name = "get_current_time"
    description = "Get the current date, time, weekday and timezone. Takes no input."
    inputs: dict = {}
    output_type = "string"

    def __init__(self, timezone: str | None = None, clock: Callable[..., datetime] = datetime.now):
        """``timezone``: an IANA name such as 'Asia/Shanghai'; None uses the machine's zone.
        ``clock(tz)``: what reads the time (``datetime.now``; a fixed moment in tests)."""
        super().__init__()
        self.clock = clock
        self.zone = None
        if timezone:
            try:
                self.zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(f"unknown timezone {timezone!r}: give an IANA name such as "
                                 "'Europe/Berlin' or 'UTC'") from e

    def forward(self) -> str:
        now = self.clock(self.zone) if self.zone else self.clock().astimezone()
        zone = self.zone.key if self.zone else now.tzname()
        return f"{now.isoformat(timespec='seconds')} ({now.strftime('%A')}, {now.strftime('%H:%M')} {zone})"
