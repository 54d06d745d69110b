"""``get_current_time()``: the current date and time, timezone-aware."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from toolkit.tool import Tool


class CurrentTimeTool(Tool):
    name = "get_current_time"
    description = "Get the current date, time, weekday and timezone. Takes no input."
    inputs: dict = {}
    output_type = "string"

    def __init__(self, timezone: str | None = None):
        """``timezone``: an IANA name such as 'Asia/Shanghai'; None uses the machine's zone."""
        super().__init__()
        self.zone = None
        if timezone:
            try:
                self.zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(f"unknown timezone {timezone!r}: give an IANA name such as "
                                 "'Europe/Berlin' or 'UTC'") from e

    def forward(self) -> str:
        now = datetime.now(self.zone) if self.zone else datetime.now().astimezone()
        zone = self.zone.key if self.zone else now.tzname()
        return f"{now.isoformat(timespec='seconds')} ({now.strftime('%A')}, {zone})"
