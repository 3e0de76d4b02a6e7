"""Schedules' maths, pure: when a schedule's ticks fall, and what each tick comes to.

Nothing here awaits or touches the database; the store (``app.store.schedules``)
reads a schedule, asks ``advance`` what its due ticks come to, and writes the
answer in one transaction with the workflows it fires.

Cron expressions have five fields (minute, hour, day of month, month, day of
week) or an alias (``@hourly``, ``@daily``…), read as Vixie cron reads them:
day of week 0 or 7 is Sunday, and when both day fields are restricted a day
matching either one matches. APScheduler's ``CronTrigger`` does the calendar
matching, on wall-clock times; turning a wall-clock time of the schedule's
time zone into an instant is done here, the way cron users expect at the two
DST transitions:

- a time that does not exist (the hour skipped in spring): a job at a fixed
  time (minute and hour fields without ``*``) fires once, at that time plus the
  skipped hour (02:30 becomes 03:30); a job of every hour (or every minute)
  has no tick there, as the clock has no such time;
- a time that happens twice (the hour repeated in autumn): a job at a fixed
  time fires once, the first time; a job of every hour fires both times.

(APScheduler 3's own time-zone handling fires fixed-time jobs twice in the
repeated hour, and after the second time answers that same time again, so only
its calendar matching is used.)

``every`` schedules tick every N seconds from their ``startAt`` (rounded up to a
whole second), or from the Unix epoch: ``every: 3600`` ticks on the hour, in UTC.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

#: Most seconds between two ``every`` ticks (a year).
MAX_EVERY_SECONDS = 366 * 86400
#: How many ticks of a schedule one pass handles at most (the rest: next pass).
MAX_TICKS_PER_PASS = 1000
#: How many recent runs a schedule keeps.
RECENT_RUNS = 50
#: The tick part of a fired workflow's id.
TICK_ID_FORMAT = "%Y%m%dT%H%M%SZ"
#: Longer than any DST shift: how far around a transition wall-clock times are looked at.
_DST_SLACK = timedelta(hours=3)
#: Ticks closer than this to the last transition check use the careful path.
_FAST_SPAN = timedelta(days=7)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: APScheduler's names, in its order (Monday first).
_APS_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PLAIN_FIELD = re.compile(r"^[0-9*,/-]+$")
_MONTH_FIELD = re.compile(r"^[0-9a-zA-Z*,/-]+$")
_DAY_TERM = re.compile(r"^(\*|[0-9a-z]+)(?:-([0-9a-z]+))?(?:/([0-9]+))?$")


class Overlap(enum.StrEnum):
    """What a tick does while the schedule's previous workflow is still open."""

    SKIP = "skip"  #: record the tick as skipped (the default)
    ALLOW = "allow"  #: fire anyway
    BUFFER_ONE = "buffer_one"  #: one tick waits and fires when the previous ends
    CANCEL_PREVIOUS = "cancel_previous"  #: cancel the open workflow(s), then fire


class RunOutcome(enum.StrEnum):
    """What a tick came to (``recentRuns[].outcome``)."""

    FIRED = "fired"  #: its workflow was created
    SKIPPED = "skipped"  #: the previous workflow was still open (``skip``, or one buffered)
    MISSED = "missed"  #: no server ran in time: older than ``catchupWindow`` when seen
    BUFFERED = "buffered"  #: waiting for the previous workflow to end (``buffer_one``)


# --------------------------------------------------------------------------- cron


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: calendar matchers over wall-clock times."""

    #: The five fields, an alias expanded.
    fields: tuple[str, ...]
    #: One matcher, or two when both day fields are restricted (either one matches).
    matchers: tuple[CronTrigger, ...]
    #: Minute and hour are fixed (no ``*``): the job is at set times of the day.
    fixed_time: bool

    def next_wall(self, wall: datetime) -> datetime | None:
        """The first matching wall-clock time (naive) strictly after ``wall``."""
        probe = (wall + _MICROSECOND).replace(tzinfo=UTC)
        found = [m.get_next_fire_time(None, probe) for m in self.matchers]
        times = [f.replace(tzinfo=None) for f in found if f is not None]
        return min(times) if times else None


def parse_cron(expression: str) -> Cron:
    """Parse five cron fields or an alias; ``ValueError`` says what is wrong."""
    text = expression.strip()
    if text.startswith("@"):
        expanded = ALIASES.get(text.lower())
        if expanded is None:
            raise ValueError(
                f"unknown alias {text!r}; the aliases are {', '.join(sorted(ALIASES))}"
            )
        text = expanded
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)}"
        )
    minute, hour, day, month, weekday = parts
    for name, value, pattern in (
        ("minute", minute, _PLAIN_FIELD),
        ("hour", hour, _PLAIN_FIELD),
        ("day of month", day, _PLAIN_FIELD),
        ("month", month, _MONTH_FIELD),
    ):
        if not pattern.fullmatch(value):
            raise ValueError(f"{name} field {value!r}: only digits, names, * , - and / are cron")
    days = _weekdays(weekday)
    kinds = {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": days}
    for key, label in zip(kinds, _FIELD_NAMES, strict=True):
        try:
            CronTrigger(second=0, **{key: kinds[key]}, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{label} field {parts[_FIELD_NAMES.index(label)]!r}: {exc}") from exc
    restricted_day = not day.startswith("*")
    restricted_weekday = not weekday.startswith("*")
    if restricted_day and restricted_weekday:
        # Vixie cron: a day matching either field matches.
        shapes = [{**kinds, "day_of_week": "*"}, {**kinds, "day": "*"}]
    else:
        shapes = [kinds]
    matchers = tuple(CronTrigger(second=0, timezone=UTC, **shape) for shape in shapes)
    cron = Cron(tuple(parts), matchers, fixed_time=not (minute[0] == "*" or hour[0] == "*"))
    if cron.next_wall(datetime(2000, 1, 1)) is None:
        raise ValueError(f"{expression.strip()!r} never matches a date")
    return cron


def _weekdays(field_value: str) -> str:
    """A cron day-of-week field (0 or 7 = Sunday, names) as APScheduler's day names.

    APScheduler 3 numbers days from Monday; names mean the same to both.
    """
    value = field_value.lower()
    if value == "*" or value == "?":
        return "*"
    days: set[int] = set()
    for term in value.split(","):
        match = _DAY_TERM.fullmatch(term)
        if match is None:
            raise ValueError(f"day of week field {field_value!r}: cannot read {term!r}")
        first, last, step = match.groups()
        if first == "*":
            low, high = 0, 6
        else:
            low = _day_number(first, field_value)
            high = _day_number(last, field_value) if last else (6 if step else low)
        if high < low:
            raise ValueError(f"day of week field {field_value!r}: {term!r} runs backwards")
        stride = int(step) if step else 1
        if stride < 1:
            raise ValueError(f"day of week field {field_value!r}: a step must be at least 1")
        days.update(d % 7 for d in range(low, high + 1, stride))
    return ",".join(name for name in _APS_DAYS if _DAY_NAMES.index(name) in days)


def _day_number(token: str, field_value: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValueError(f"day of week field {field_value!r}: {number} is not 0 to 7")
        return number
    if token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    raise ValueError(f"day of week field {field_value!r}: {token!r} is not a day")


@lru_cache(maxsize=1024)
def cron_of(expression: str) -> Cron:
    """``parse_cron``, remembered (a schedule's expression is parsed once per process)."""
    return parse_cron(expression)


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``ValueError`` if there is none by that name."""
    try:
        if not name or name != name.strip() or ".." in name or name.startswith("/"):
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone (such as Europe/Paris)") from exc


def _instants(wall: datetime, zone: ZoneInfo, fixed_time: bool) -> list[datetime]:
    """The instants a matching wall-clock time stands for (see the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    exists = first.astimezone(zone).replace(tzinfo=None) == wall
    if exists:  # the repeated hour: ``first`` is the earlier of the two
        return [first] if fixed_time else [first, second]
    # The skipped hour: ``first`` reads the time with the offset before the change, which
    # is that wall-clock time plus the skipped hour.
    return [first] if fixed_time else []


def next_cron_tick(cron: Cron, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first instant after ``after`` (aware) at which ``cron`` fires in ``zone``."""
    wall = after.astimezone(zone).replace(tzinfo=None)
    candidate_wall = cron.next_wall(wall)
    if candidate_wall is None:
        return None
    candidate = candidate_wall.replace(tzinfo=zone).astimezone(UTC)
    if candidate - after < _FAST_SPAN and _same_offset(zone, after - _DST_SLACK, candidate):
        return candidate
    return _next_near_a_transition(cron, zone, after, wall)


def _same_offset(zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    """No DST transition between ``start`` and ``end`` plus slack (two within a week
    do not happen)."""
    return start.astimezone(zone).utcoffset() == (end + _DST_SLACK).astimezone(zone).utcoffset()


def _next_near_a_transition(
    cron: Cron, zone: ZoneInfo, after: datetime, wall: datetime
) -> datetime | None:
    """The careful path: every matching wall-clock time near ``after``, each turned into
    its instants, the earliest one after ``after`` kept."""
    best: datetime | None = None
    bound: datetime | None = None
    current = cron.next_wall(wall - _DST_SLACK - _MICROSECOND)
    while current is not None and (bound is None or current <= bound):
        for instant in _instants(current, zone, cron.fixed_time):
            if instant > after and (best is None or instant < best):
                best = instant
                bound = best.astimezone(zone).replace(tzinfo=None) + _DST_SLACK
        current = cron.next_wall(current)
    return best


# --------------------------------------------------------------------------- cadence


@dataclass(frozen=True)
class Cadence:
    """When a schedule ticks: its cron or ``every``, time zone, ``startAt`` and ``endAt``."""

    cron: Cron | None
    every: int | None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    start_at: datetime | None = None
    end_at: datetime | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a cadence has a cron expression or an interval, not both")

    def next_after(self, after: datetime) -> datetime | None:
        """The first tick after ``after`` within ``startAt``/``endAt``, or None."""
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _MICROSECOND
        if self.cron is not None:
            tick = next_cron_tick(self.cron, self.zone, after)
        else:
            assert self.every is not None
            tick = _next_every(self.every, self._anchor(), after)
        if tick is None or (self.end_at is not None and tick > self.end_at):
            return None
        return tick

    def _anchor(self) -> datetime:
        if self.start_at is None:
            return _EPOCH
        whole = self.start_at.replace(microsecond=0)
        return whole if whole == self.start_at else whole + timedelta(seconds=1)


def _next_every(period: int, anchor: datetime, after: datetime) -> datetime:
    step = timedelta(seconds=period)
    if after < anchor:
        return anchor
    return anchor + ((after - anchor) // step + 1) * step


# --------------------------------------------------------------------------- ticks


def jitter_delay(jitter: float, rand: Callable[[], float]) -> timedelta:
    """A tick's random delay: from 0 up to ``jitter`` seconds (``rand()`` in [0, 1)),
    in whole microseconds rounded down (never past the bound)."""
    if jitter <= 0:
        return timedelta(0)
    return timedelta(microseconds=math.floor(jitter * rand() * 1_000_000))


def tick_workflow_id(schedule_id: str, tick: datetime) -> str:
    """The id of the workflow a tick fires: ``{scheduleId}-{YYYYMMDDTHHMMSSZ}``."""
    return f"{schedule_id}-{tick.astimezone(UTC).strftime(TICK_ID_FORMAT)}"


def trigger_tick(now: datetime) -> datetime:
    """The tick a manual trigger fires for: now, to the second (the workflow id's grain)."""
    return now.astimezone(UTC).replace(microsecond=0)


class Decision(enum.Enum):
    """What the overlap policy makes of a tick that is on time."""

    FIRE = "fire"
    SKIP = "skip"
    BUFFER = "buffer"
    CANCEL_AND_FIRE = "cancel_and_fire"


def decide_overlap(policy: Overlap, *, open_workflows: int, buffered: bool) -> Decision:
    """A tick on time, while ``open_workflows`` of the schedule's workflows are open and
    (``buffer_one``) one tick is or is not buffered already."""
    if open_workflows == 0 or policy is Overlap.ALLOW:
        return Decision.FIRE
    if policy is Overlap.SKIP:
        return Decision.SKIP
    if policy is Overlap.BUFFER_ONE:
        return Decision.SKIP if buffered else Decision.BUFFER
    return Decision.CANCEL_AND_FIRE


@dataclass(frozen=True)
class ScheduleState:
    """What ``advance`` needs of a schedule, as stored."""

    cadence: Cadence
    overlap: Overlap
    catchup_window: float
    jitter: float
    limit: int | None
    fired_count: int
    #: The next tick, and when it fires (the tick plus its jitter); None: no tick left.
    next_run_at: datetime | None
    next_fire_at: datetime | None
    #: ``buffer_one``: the tick waiting for the previous workflow to end.
    buffered_at: datetime | None = None

    def first_tick(self, now: datetime, rand: Callable[[], float]) -> ScheduleState:
        """The state of a schedule (re)started at ``now``: its next tick after now."""
        tick = None if self._spent(self.fired_count) else self.cadence.next_after(now)
        fire_at = None if tick is None else tick + jitter_delay(self.jitter, rand)
        return replace(self, next_run_at=tick, next_fire_at=fire_at, buffered_at=None)

    def _spent(self, fired: int) -> bool:
        return self.limit is not None and fired >= self.limit


@dataclass(frozen=True)
class Run:
    """One tick's outcome, to record."""

    scheduled_at: datetime
    outcome: RunOutcome


@dataclass
class Advance:
    """What the due ticks of one pass come to."""

    #: Every tick handled, in order, with its outcome (fired ones included).
    runs: list[Run] = field(default_factory=list)
    #: The ticks whose workflows to create now, in order.
    fire: list[datetime] = field(default_factory=list)
    #: The buffered tick fires now (its run, recorded ``buffered``, becomes ``fired``).
    fire_buffered: datetime | None = None
    #: Cancel the schedule's open workflows before firing (``cancel_previous``).
    cancel_open: bool = False
    state: ScheduleState | None = None


def advance(
    state: ScheduleState,
    *,
    now: datetime,
    open_workflows: int,
    rand: Callable[[], float],
    budget: int = MAX_TICKS_PER_PASS,
) -> Advance:
    """Work through a schedule's due ticks at ``now``: fire, skip, buffer or record as
    missed each one, and compute the next tick.

    ``open_workflows`` is how many of the schedule's workflows are not finished. Ticks
    whose fire time is older than ``catchupWindow`` are missed (no server ran at the
    time); the others go through the overlap policy, each fire counting as an open
    workflow for the ticks after it. Under ``cancel_previous`` only the last of several
    ticks due at once fires (the earlier would be cancelled as soon as they started);
    the others are recorded as skipped. At most ``budget`` ticks are handled.
    """
    out = Advance()
    fired = state.fired_count
    buffered = state.buffered_at
    window = timedelta(seconds=state.catchup_window)
    if buffered is not None and open_workflows == 0:
        if state._spent(fired):
            out.runs.append(Run(buffered, RunOutcome.SKIPPED))
        else:
            out.fire_buffered = buffered
            fired += 1
            open_workflows += 1
        buffered = None
    tick, fire_at = state.next_run_at, state.next_fire_at
    on_time: list[datetime] = []
    handled = 0
    while tick is not None and fire_at is not None and fire_at <= now and handled < budget:
        handled += 1
        if now - fire_at > window:
            out.runs.append(Run(tick, RunOutcome.MISSED))
        else:
            on_time.append(tick)
        tick = state.cadence.next_after(tick)
        fire_at = None if tick is None else tick + jitter_delay(state.jitter, rand)
    if state.overlap is Overlap.CANCEL_PREVIOUS and len(on_time) > 1:
        out.runs.extend(Run(t, RunOutcome.SKIPPED) for t in on_time[:-1])
        on_time = on_time[-1:]
    for current in on_time:
        if state._spent(fired):
            tick = fire_at = None
            break
        decision = decide_overlap(
            state.overlap, open_workflows=open_workflows, buffered=buffered is not None
        )
        if decision is Decision.SKIP:
            out.runs.append(Run(current, RunOutcome.SKIPPED))
        elif decision is Decision.BUFFER:
            out.runs.append(Run(current, RunOutcome.BUFFERED))
            buffered = current
        else:
            if decision is Decision.CANCEL_AND_FIRE:
                out.cancel_open = True
                open_workflows = 0
            out.runs.append(Run(current, RunOutcome.FIRED))
            out.fire.append(current)
            fired += 1
            open_workflows += 1
    out.runs.sort(key=lambda run: run.scheduled_at)
    if state._spent(fired):
        tick = fire_at = None
    out.state = replace(
        state,
        fired_count=fired,
        next_run_at=tick,
        next_fire_at=fire_at,
        buffered_at=buffered,
    )
    return out


def recorded(runs: Sequence[Run]) -> list[Run]:
    """The runs of one pass worth a row: the newest ``RECENT_RUNS`` (older rows would be
    pruned at once), plus any ``buffered`` one (it becomes ``fired`` later)."""
    kept = list(runs[-RECENT_RUNS:])
    older = [r for r in runs[:-RECENT_RUNS] if r.outcome is RunOutcome.BUFFERED]
    return older + kept
