"""Budget notifications: once per threshold, again after the period resets."""

from __future__ import annotations

from tray.alerts import Alert, ThresholdWatch
from tray.state import Budget, TrayState, down

RESET_1 = "2026-11-29T00:00:00+01:00"
RESET_2 = "2026-11-30T00:00:00+01:00"


def day(spent: float, resets_at: str = RESET_1) -> TrayState:
    return TrayState(running=True, budgets=(Budget("day", 25.0, spent, (0.8, 0.95), resets_at),))


def test_each_threshold_once_then_the_limit() -> None:
    watch = ThresholdWatch()

    assert watch.update(day(1.0)) == []
    assert watch.update(day(19.9)) == []
    assert watch.update(day(20.0)) == [
        Alert(
            "claude-sidecar: budget warning", "80% of the day budget is spent ($20.00 of $25.00)."
        )
    ]
    assert watch.update(day(21.0)) == []
    assert watch.update(day(20.5)) == []  # a refund does not re-arm
    assert [a.message for a in watch.update(day(24.0))] == [
        "96% of the day budget is spent ($24.00 of $25.00)."
    ]
    assert watch.update(day(26.0)) == [
        Alert(
            "claude-sidecar: budget used up",
            f"The day budget is spent ($26.00 of $25.00); requests are refused until {RESET_1}.",
        )
    ]
    assert watch.update(day(30.0)) == []


def test_a_jump_past_several_thresholds_says_the_highest() -> None:
    watch = ThresholdWatch()
    watch.update(day(0.0))

    [alert] = watch.update(day(24.5))

    assert alert.message.startswith("98% of the day budget")


def test_the_first_sighting_of_a_period_is_silent() -> None:
    watch = ThresholdWatch()

    assert watch.update(day(22.0)) == []  # the tray started at 88 %
    assert watch.update(day(22.5)) == []
    assert len(watch.update(day(24.0))) == 1  # 95 % is news


def test_a_new_period_rearms() -> None:
    watch = ThresholdWatch()
    watch.update(day(0.0))
    assert len(watch.update(day(21.0))) == 1

    assert watch.update(day(0.0, RESET_2)) == []
    assert len(watch.update(day(21.0, RESET_2))) == 1


def test_down_or_no_policy_forgets_nothing() -> None:
    watch = ThresholdWatch()
    watch.update(day(0.0))
    assert len(watch.update(day(21.0))) == 1

    assert watch.update(down("not running")) == []
    assert watch.update(TrayState(running=True)) == []
    assert watch.update(day(21.5)) == []  # back up: 80 % was already said
