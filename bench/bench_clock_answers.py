"""The default models asked the clock's four questions at 35 moments, with get_current_time's output
as it is written now and in its older form, side by side in one run.

    python bench/bench_clock_answers.py

For each of 7 days x 5 hours (UTC) the solver (the planner adapter, as the pipeline runs it) answers
"What time is it now?", "What is today's date?", "What day of the week is it?" and "What year is
it?" from one get_current_time step; a question counts when the answer holds HH:MM, the date, the
weekday or the year of that moment. Measured 2026-12-05 (v40, llama.cpp Q8_0): older form time 17/35,
date 32, weekday 35, year 35; now time 35/35, date 34, weekday 34, year 35 (README, "The default models").
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = {"time": "What time is it now?", "date": "What is today's date?",
             "weekday": "What day of the week is it?", "year": "What year is it?"}


def older_form(now: datetime) -> str:
    """What get_current_time wrote until 2026-12-05 (and the demo's training data still writes)."""
    return f"{now.isoformat(timespec='seconds')} ({now.strftime('%A')}, UTC)"


def main() -> None:
    from pipeline.defaults import default_models, default_pipeline
    from pipeline.plan import parse_plan
    from pipeline.solver import solve
    from toolkit.tools.clock import CurrentTimeTool

    pipe = default_pipeline(default_models())
    plan = parse_plan("Plan: Use get_current_time to read the current date and time.\n#E1 = get_current_time[]",
                      ["get_current_time"])
    moments = [datetime(2026, 12, 1, h, 55, 49, tzinfo=timezone.utc) + timedelta(days=d)
               for d in range(7) for h in (0, 1, 9, 13, 23)]
    forms = {"older form": older_form,
             "now": lambda m: CurrentTimeTool(timezone="UTC", clock=lambda tz=None: m.astimezone(tz))()}
    print("| get_current_time writes | " + " | ".join(QUESTIONS) + " |\n|---|" + "---|" * len(QUESTIONS))
    for name, form in forms.items():
        right = dict.fromkeys(QUESTIONS, 0)
        for m in moments:
            evidence = form(m)
            want = {"time": m.strftime("%H:%M"), "date": m.date().isoformat(), "weekday": m.strftime("%A"),
                    "year": str(m.year)}
            for part, question in QUESTIONS.items():
                right[part] += want[part] in solve(question, plan, {"#E1": evidence}, pipe.solver)
        print(f"| {name} (e.g. {form(moments[0])}) | " + " | ".join(f"{right[p]}/{len(moments)}" for p in QUESTIONS)
              + " |", flush=True)


if __name__ == "__main__":
    main()
