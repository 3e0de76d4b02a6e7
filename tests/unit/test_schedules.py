"""The pure schedule maths: cron reading, next ticks across time zones and DST, bounds,
jitter, overlap decisions and what a pass over due ticks comes to."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.schedules import (
    MAX_TICKS_PER_PASS,
    RECENT_RUNS,
    Cadence,
    Decision,
    Overlap,
    Run,
    RunOutcome,
    ScheduleState,
    advance,
    decide_overlap,
    jitter_delay,
    parse_cron,
    recorded,
    tick_workflow_id,
    time_zone,
    trigger_tick,
)

PARIS = time_zone("Europe/Paris")
NEW_YORK = time_zone("America/New_York")
SYDNEY = time_zone("Australia/Sydney")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def ticks(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    cadence = Cadence(parse_cron(expression), None, time_zone(zone))
    found: list[datetime] = []
    for _ in range(count):
        tick = cadence.next_after(found[-1] if found else after)
        assert tick is not None
        found.append(tick)
    return found


def local(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(time_zone(zone)).strftime("%m-%d %H:%M") for t in times]


# --------------------------------------------------------------------------- cron


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Plain fields, in UTC.
        ("*/15 * * * *", "UTC", utc(2026, 1, 1, 10, 7), ["01-01 10:15", "01-01 10:30"]),
        ("0 9 * * 1-5", "UTC", utc(2026, 1, 2, 12), ["01-05 09:00", "01-06 09:00"]),
        # Day of week 0 and 7 are Sunday (Vixie cron), names too.
        ("0 9 * * 0", "UTC", utc(2026, 1, 1), ["01-04 09:00", "01-11 09:00"]),
        ("0 9 * * 7", "UTC", utc(2026, 1, 1), ["01-04 09:00", "01-11 09:00"]),
        ("0 9 * * sun", "UTC", utc(2026, 1, 1), ["01-04 09:00", "01-11 09:00"]),
        ("0 9 * * MON-FRI", "UTC", utc(2026, 1, 2, 12), ["01-05 09:00", "01-06 09:00"]),
        ("0 9 * * */3", "UTC", utc(2026, 1, 1), ["01-03 09:00", "01-04 09:00"]),  # sat, sun, wed
        # Both day fields restricted: a day matching either one.
        ("0 0 1 * 1", "UTC", utc(2026, 1, 26, 1), ["02-01 00:00", "02-02 00:00"]),
        # Aliases.
        ("@hourly", "UTC", utc(2026, 1, 1, 10, 30), ["01-01 11:00", "01-01 12:00"]),
        ("@daily", "UTC", utc(2026, 1, 1, 10), ["01-02 00:00", "01-03 00:00"]),
        ("@weekly", "UTC", utc(2026, 1, 1), ["01-04 00:00", "01-11 00:00"]),
        ("@monthly", "UTC", utc(2026, 1, 15), ["02-01 00:00", "03-01 00:00"]),
        ("@yearly", "UTC", utc(2026, 1, 15), ["01-01 00:00", "01-01 00:00"]),
        ("0 0 29 2 *", "UTC", utc(2026, 1, 1), ["02-29 00:00", "02-29 00:00"]),  # 2028, 2032
        # In a time zone: 09:00 local, whatever UTC says.
        ("0 9 * * *", "Europe/Paris", utc(2026, 1, 1), ["01-01 09:00", "01-02 09:00"]),
        ("0 9 * * *", "America/New_York", utc(2026, 1, 1), ["01-01 09:00", "01-02 09:00"]),
        ("0 9 * * *", "Australia/Sydney", utc(2026, 1, 1), ["01-02 09:00", "01-03 09:00"]),
    ],
)
def test_cron_ticks(expression: str, zone: str, after: datetime, expected: list[str]) -> None:
    assert local(ticks(expression, zone, after, 2), zone) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Spring forward in Paris (2026-03-29, 02:00 -> 03:00): 02:30 does not exist.
        # A fixed-time job fires once, an hour later by the clock.
        (
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 3, 28, 12),
            ["03-29 03:30 +0200", "03-30 02:30 +0200", "03-31 02:30 +0200"],
        ),
        # A job of every half hour has no tick in the skipped hour.
        (
            "*/30 * * * *",
            "Europe/Paris",
            utc(2026, 3, 28, 23, 50),
            ["03-29 01:00 +0100", "03-29 01:30 +0100", "03-29 03:00 +0200", "03-29 03:30 +0200"],
        ),
        # Fall back in Paris (2026-10-25, 03:00 -> 02:00): 02:30 happens twice. A
        # fixed-time job fires once (the first time)...
        (
            "30 2 * * *",
            "Europe/Paris",
            utc(2026, 10, 24, 12),
            ["10-25 02:30 +0200", "10-26 02:30 +0100", "10-27 02:30 +0100"],
        ),
        # ...a job of every half hour fires every half hour of real time.
        (
            "*/30 * * * *",
            "Europe/Paris",
            utc(2026, 10, 24, 23, 50),
            [
                "10-25 02:00 +0200",
                "10-25 02:30 +0200",
                "10-25 02:00 +0100",
                "10-25 02:30 +0100",
                "10-25 03:00 +0100",
            ],
        ),
        # New York: spring forward 2026-03-08 02:00 -> 03:00, fall back 2026-11-01.
        (
            "30 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12),
            ["03-08 03:30 -0400", "03-09 02:30 -0400"],
        ),
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            ["11-01 01:30 -0400", "11-02 01:30 -0500"],
        ),
        (
            "0 * * * *",
            "America/New_York",
            utc(2026, 11, 1, 4, 30),
            ["11-01 01:00 -0400", "11-01 01:00 -0500", "11-01 02:00 -0500"],
        ),
        # The southern hemisphere: Sydney falls back on 2026-04-05 (03:00 -> 02:00).
        (
            "30 2 * * *",
            "Australia/Sydney",
            utc(2026, 4, 3, 12),
            ["04-04 02:30 +1100", "04-05 02:30 +1100", "04-06 02:30 +1000"],
        ),
    ],
)
def test_cron_ticks_across_dst_transitions(
    expression: str, zone: str, after: datetime, expected: list[str]
) -> None:
    found = ticks(expression, zone, after, len(expected))
    assert [t.astimezone(time_zone(zone)).strftime("%m-%d %H:%M %z") for t in found] == expected


@settings(max_examples=200, deadline=None)
@given(
    expression=st.sampled_from(["*/7 * * * *", "30 2 * * *", "0 * * * *", "15 1,2,3 * * 0"]),
    zone=st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Sydney", "UTC"]),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
)
def test_ticks_always_move_forward(expression: str, zone: str, start: datetime) -> None:
    found = ticks(expression, zone, start.replace(tzinfo=UTC), 30)
    assert all(later > earlier for earlier, later in itertools.pairwise(found))
    # Nothing is skipped: the tick after any instant between two ticks is the second.
    cadence = Cadence(parse_cron(expression), None, time_zone(zone))
    for earlier, later in itertools.pairwise(found[:10]):
        assert cadence.next_after(earlier + (later - earlier) / 2) == later


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("61 * * * *", "minute field '61'"),
        ("0 24 * * *", "hour field '24'"),
        ("0 0 32 * *", "day of month field '32'"),
        ("0 0 * 13 *", "month field '13'"),
        ("0 0 * * 8", "day of week field '8'"),
        ("0 0 * * 5-1", "runs backwards"),
        ("0 0 L * *", "only digits"),
        ("0 0 * * mon#2", "cannot read"),
        ("@reboot", "unknown alias"),
        ("0 0 30 2 *", "never matches"),
    ],
)
def test_invalid_cron_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cron(expression)


def test_time_zones_are_iana_names() -> None:
    assert time_zone("Europe/Paris").key == "Europe/Paris"
    for bad in ("Mars/Olympus", "", "../etc/passwd", "/usr/share/zoneinfo/UTC", " UTC"):
        with pytest.raises(ValueError, match="not an IANA time zone"):
            time_zone(bad)


# --------------------------------------------------------------------------- every, bounds


def test_every_ticks_from_the_epoch_or_from_start_at() -> None:
    assert Cadence(None, 60).next_after(utc(2026, 1, 1, 10, 0, 30)) == utc(2026, 1, 1, 10, 1)
    assert Cadence(None, 3600).next_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    anchored = Cadence(None, 10, start_at=utc(2026, 1, 1, 10, 0, 3))
    assert anchored.next_after(utc(2025, 1, 1)) == utc(2026, 1, 1, 10, 0, 3)
    assert anchored.next_after(utc(2026, 1, 1, 10, 0, 3)) == utc(2026, 1, 1, 10, 0, 13)
    # A start time within a second ticks from the next whole second.
    fraction = Cadence(None, 5, start_at=utc(2026, 1, 1, 10).replace(microsecond=300_000))
    assert fraction.next_after(utc(2025, 1, 1)) == utc(2026, 1, 1, 10, 0, 1)


def test_start_at_and_end_at_bound_the_ticks() -> None:
    cadence = Cadence(
        parse_cron("0 * * * *"), None, start_at=utc(2026, 1, 1, 10, 30), end_at=utc(2026, 1, 1, 12)
    )
    assert cadence.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 11)
    assert cadence.next_after(utc(2026, 1, 1, 11)) == utc(2026, 1, 1, 12)  # endAt included
    assert cadence.next_after(utc(2026, 1, 1, 12)) is None
    every = Cadence(None, 60, end_at=utc(2026, 1, 1, 0, 2))
    assert every.next_after(utc(2026, 1, 1, 0, 1, 30)) == utc(2026, 1, 1, 0, 2)
    assert every.next_after(utc(2026, 1, 1, 0, 2)) is None


def test_a_cadence_has_cron_or_every() -> None:
    with pytest.raises(ValueError):
        Cadence(None, None)
    with pytest.raises(ValueError):
        Cadence(parse_cron("@daily"), 60)


@settings(max_examples=200, deadline=None)
@given(jitter=st.floats(0, 3600), roll=st.floats(0, 1, exclude_max=True))
def test_jitter_stays_within_its_bound(jitter: float, roll: float) -> None:
    delay = jitter_delay(jitter, lambda: roll).total_seconds()
    assert 0 <= delay <= jitter
    assert jitter_delay(0, lambda: 0.99) == timedelta(0)


def test_ids_and_trigger_ticks() -> None:
    assert tick_workflow_id("nightly", utc(2026, 11, 21, 3)) == "nightly-20261121T030000Z"
    assert trigger_tick(utc(2026, 11, 21, 3).replace(microsecond=999_999)) == utc(2026, 11, 21, 3)


# --------------------------------------------------------------------------- overlap


@pytest.mark.parametrize(
    ("policy", "open_workflows", "buffered", "decision"),
    [
        *((p, 0, False, Decision.FIRE) for p in Overlap),
        (Overlap.ALLOW, 3, False, Decision.FIRE),
        (Overlap.SKIP, 1, False, Decision.SKIP),
        (Overlap.BUFFER_ONE, 1, False, Decision.BUFFER),
        (Overlap.BUFFER_ONE, 1, True, Decision.SKIP),
        (Overlap.CANCEL_PREVIOUS, 1, False, Decision.CANCEL_AND_FIRE),
    ],
)
def test_overlap_decisions(
    policy: Overlap, open_workflows: int, buffered: bool, decision: Decision
) -> None:
    assert decide_overlap(policy, open_workflows=open_workflows, buffered=buffered) is decision


def state(
    *,
    overlap: Overlap = Overlap.SKIP,
    every: int = 60,
    next_run: datetime | None = None,
    window: float = 300,
    jitter: float = 0,
    limit: int | None = None,
    fired: int = 0,
    buffered: datetime | None = None,
) -> ScheduleState:
    tick = next_run or utc(2026, 1, 1, 10)
    return ScheduleState(
        Cadence(None, every), overlap, window, jitter, limit, fired, tick, tick, buffered
    )


def outcomes(runs: list[Run]) -> list[tuple[str, str]]:
    return [(r.scheduled_at.strftime("%H:%M"), r.outcome.value) for r in runs]


def test_a_tick_on_time_fires_and_the_next_is_computed_from_the_tick() -> None:
    # Seen 20 s late: the next tick is still a minute after the tick, not after now.
    out = advance(state(), now=utc(2026, 1, 1, 10, 0, 20), open_workflows=0, rand=random.random)
    assert out.fire == [utc(2026, 1, 1, 10)]
    assert outcomes(out.runs) == [("10:00", "fired")]
    assert out.state is not None
    assert out.state.next_run_at == utc(2026, 1, 1, 10, 1)
    assert out.state.fired_count == 1


def test_nothing_happens_before_the_fire_time() -> None:
    early = utc(2026, 1, 1, 9, 59, 59)
    out = advance(state(jitter=5), now=early, open_workflows=0, rand=lambda: 0.5)
    assert out.runs == [] and out.fire == []
    assert out.state == state(jitter=5)


def test_catch_up_fires_recent_ticks_and_records_old_ones_missed() -> None:
    # Down from 10:00 to 10:10; the catch-up window is 3 minutes.
    out = advance(
        state(window=180), now=utc(2026, 1, 1, 10, 10, 5), open_workflows=0, rand=random.random
    )
    assert outcomes(out.runs) == [
        *((f"10:0{m}", "missed") for m in range(8)),
        ("10:08", "fired"),  # the first on time fires; the previous is then open:
        ("10:09", "skipped"),
        ("10:10", "skipped"),
    ]
    assert out.fire == [utc(2026, 1, 1, 10, 8)]
    assert out.state is not None and out.state.next_run_at == utc(2026, 1, 1, 10, 11)


def test_catch_up_under_allow_fires_every_tick_in_the_window() -> None:
    out = advance(
        state(overlap=Overlap.ALLOW, window=180),
        now=utc(2026, 1, 1, 10, 10, 5),
        open_workflows=0,
        rand=random.random,
    )
    assert [t.strftime("%H:%M") for t in out.fire] == ["10:08", "10:09", "10:10"]


def test_skip_while_the_previous_workflow_is_open() -> None:
    out = advance(state(), now=utc(2026, 1, 1, 10), open_workflows=1, rand=random.random)
    assert outcomes(out.runs) == [("10:00", "skipped")] and out.fire == []
    assert out.state is not None and out.state.fired_count == 0


def test_buffer_one_keeps_one_tick_and_fires_it_when_the_previous_ends() -> None:
    first = advance(
        state(overlap=Overlap.BUFFER_ONE), now=utc(2026, 1, 1, 10), open_workflows=1, rand=lambda: 0
    )
    assert outcomes(first.runs) == [("10:00", "buffered")]
    assert first.state is not None and first.state.buffered_at == utc(2026, 1, 1, 10)
    second = advance(first.state, now=utc(2026, 1, 1, 10, 1), open_workflows=1, rand=lambda: 0)
    assert outcomes(second.runs) == [("10:01", "skipped")]  # one is buffered already
    assert second.state is not None
    third = advance(second.state, now=utc(2026, 1, 1, 10, 1, 30), open_workflows=0, rand=lambda: 0)
    assert third.fire_buffered == utc(2026, 1, 1, 10)
    assert third.runs == [] and third.state is not None and third.state.buffered_at is None
    assert third.state.fired_count == 1


def test_cancel_previous_cancels_and_fires() -> None:
    out = advance(
        state(overlap=Overlap.CANCEL_PREVIOUS),
        now=utc(2026, 1, 1, 10),
        open_workflows=2,
        rand=random.random,
    )
    assert out.cancel_open and out.fire == [utc(2026, 1, 1, 10)]


def test_cancel_previous_fires_only_the_last_of_several_due_ticks() -> None:
    out = advance(
        state(overlap=Overlap.CANCEL_PREVIOUS),
        now=utc(2026, 1, 1, 10, 2),
        open_workflows=0,
        rand=random.random,
    )
    assert outcomes(out.runs) == [("10:00", "skipped"), ("10:01", "skipped"), ("10:02", "fired")]
    assert not out.cancel_open  # nothing was open


def test_limit_counts_fires_and_ends_the_schedule() -> None:
    out = advance(
        state(overlap=Overlap.ALLOW, limit=3, fired=1),
        now=utc(2026, 1, 1, 10, 5),
        open_workflows=0,
        rand=random.random,
    )
    assert [t.strftime("%H:%M") for t in out.fire] == ["10:00", "10:01"]
    assert out.state is not None
    assert out.state.fired_count == 3 and out.state.next_run_at is None
    assert out.state.next_fire_at is None


def test_jitter_delays_each_fire_within_its_bound() -> None:
    out = advance(
        state(overlap=Overlap.ALLOW, jitter=30),
        now=utc(2026, 1, 1, 10),
        open_workflows=0,
        rand=lambda: 0.5,
    )
    assert out.state is not None
    assert out.state.next_run_at == utc(2026, 1, 1, 10, 1)
    assert out.state.next_fire_at == utc(2026, 1, 1, 10, 1, 15)


def test_a_pass_handles_a_bounded_number_of_ticks() -> None:
    # A year down with a one-second schedule: the rest is handled by the next passes.
    out = advance(
        state(every=1, window=10), now=utc(2027, 1, 1), open_workflows=0, rand=random.random
    )
    assert len(out.runs) == MAX_TICKS_PER_PASS
    assert all(r.outcome is RunOutcome.MISSED for r in out.runs)
    assert out.state is not None
    assert out.state.next_run_at == utc(2026, 1, 1, 10) + timedelta(seconds=MAX_TICKS_PER_PASS)


def test_only_the_newest_runs_of_a_pass_are_worth_a_row() -> None:
    runs = [Run(utc(2026, 1, 1, 0, m), RunOutcome.MISSED) for m in range(RECENT_RUNS + 10)]
    runs[2] = Run(runs[2].scheduled_at, RunOutcome.BUFFERED)
    kept = recorded(runs)
    assert kept[0] == runs[2]
    assert kept[1:] == runs[-RECENT_RUNS:]
