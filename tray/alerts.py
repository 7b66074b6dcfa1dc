"""Budget notifications: say once when spend crosses a threshold, again after the reset.

A budget period is known by its name and `resets_at`, so a new day or month is a new
period and its thresholds are armed again. The first sighting of a period only records
where it stands: starting the tray at 85 % of the day's budget does not announce 80 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from tray.render import money
from tray.state import Budget, TrayState


@dataclass(frozen=True)
class Alert:
    """A notification to show: a short title and one sentence."""

    title: str
    message: str


class ThresholdWatch:
    """Turns successive states into the budget alerts that are due."""

    def __init__(self) -> None:
        self._reached: dict[tuple[str, str | None], float] = {}

    def update(self, state: TrayState) -> list[Alert]:
        """The alerts for thresholds crossed since the last state (none while down)."""
        alerts = []
        for budget in state.budgets or ():
            key = (budget.period, budget.resets_at)
            mark = _highest_mark(budget)
            if key not in self._reached:
                self._reached[key] = mark
                continue
            if mark > self._reached[key]:
                self._reached[key] = mark
                alerts.append(_alert(budget, mark))
        return alerts


def _highest_mark(budget: Budget) -> float:
    """The highest threshold (or 1.0, the limit itself) that the spend has reached; 0 for none."""
    marks = [m for m in (*budget.thresholds, 1.0) if 0 < m <= budget.fraction]
    return max(marks, default=0.0)


def _alert(budget: Budget, mark: float) -> Alert:
    spent = f"{money(budget.spent_usd)} of {money(budget.limit_usd)}"
    if mark >= 1.0:
        until = f"; requests are refused until {budget.resets_at}" if budget.resets_at else ""
        return Alert(
            "claude-sidecar: budget used up",
            f"The {budget.period} budget is spent ({spent}){until}.",
        )
    return Alert(
        "claude-sidecar: budget warning",
        f"{budget.fraction:.0%} of the {budget.period} budget is spent ({spent}).",
    )
