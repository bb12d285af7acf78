"""Actor-day profiles and their baselines, computed by DuckDB over the ledger's `events` view.

A statement belongs to the day (and hour) of its `ts_start` in the configured time zone; its
outcome adds rows, status and the subjects seen in results. Per actor and day: statements,
distinct subjects, subjects new to the actor (not touched in `novel_days`), rows read, bulk
reads, distinct tables, statements at the actor's unusual hours, refusals. Baselines of a day
are taken over the `baseline_days` before it: the actor's median, and the median over those
days of the peer group's 99th percentile. Allow-listed actors are left out of everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from scalple.watch.rules import METRICS
from scalple.watch.settings import WatchSettings

if TYPE_CHECKING:
    import duckdb

DAY_US: Final = 86_400_000_000
HOUR_US: Final = 3_600_000_000
USUAL_HOUR_DAYS: Final = 2  # an hour is usual for an actor who worked in it on 2 baseline days
GROUP_HOUR_SHARE: Final = 0.01  # or for peers when 1% of their actor-days had work in it
PEER_QUANTILE: Final = 0.99
COUNTERS: Final = tuple(dict.fromkeys(METRICS.values()))


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def local_us(settings: WatchSettings, ts: str = "ts_start") -> str:
    """µs since the epoch of local wall-clock time (days and hours are counted on it)."""
    if settings.timezone == "UTC":
        return ts
    return f"epoch_us(timezone({sql_text(settings.timezone)}, make_timestamptz({ts})))"


def _any_glob(column: str, patterns: Sequence[str]) -> str:
    # GLOB and fnmatch.fnmatchcase agree: *, ?, [...], case-sensitive.
    return " OR ".join(f"{column} GLOB {sql_text(p)}" for p in patterns) or "false"


def group_sql(settings: WatchSettings) -> str:
    """The peer group of a statement row (configured groups first, then `peer_by`)."""
    key = {
        "role_app": "coalesce(db_role, '') || '/' || coalesce(application_name, '')",
        "role": "coalesce(db_role, '')",
        "app": "coalesce(application_name, '')",
        "none": "'all'",
    }[settings.peer_by]
    cases = " ".join(
        f"WHEN {_any_glob('actor', pats)} THEN {sql_text('group:' + name)}"
        for name, pats in settings.peer_groups.items()
    )
    return f"CASE {cases} ELSE {key} END" if cases else key


def subject_key(x: str) -> str:
    """A subject hash cut to 12 hex digits (48 bits, a string DuckDB keeps inline): grouping
    64-character strings was most of the profile's time, and two subjects of one actor
    sharing 48 bits is a one-in-10^9 event. `today.subject_key` is the same in Python."""
    return f"substr({x}, 1, 12)"


# Statement and outcome records are paired on (ts_start, hash(event_id)): the outcome keeps its
# statement's ts_start, and integer keys join several times faster than event id strings.
PAIR: Final = "ts_start, hash(event_id) AS eh"


def _range(lo_us: int, hi_us: int) -> str:
    return f"ts_start >= {int(lo_us)} AND ts_start < {int(hi_us)}"


def _statements(settings: WatchSettings, lo_us: int, hi_us: int, columns: str) -> str:
    """Attributed, not allow-listed statement records in the range, with their local day."""
    local = local_us(settings)
    return f"""
        SELECT {columns}, CAST({local} // {DAY_US} AS INTEGER) AS day
        FROM events WHERE kind = 'statement' AND actor IS NOT NULL AND {_range(lo_us, hi_us)}
          AND NOT ({_any_glob("actor", settings.allow)})"""


def load_statements(
    con: duckdb.DuckDBPyConnection, settings: WatchSettings, lo_us: int, hi_us: int
) -> None:
    """Tables `w_st` (attributed statements in [lo_us, hi_us), one row each, outcome merged),
    `w_tables` (distinct tables per actor-day) and `w_pairs` (distinct subject keys per
    actor-day).

    Subject and table lists never go through the statement-outcome join (carrying them made
    it six times slower): outcome subjects are unnested first and joined on event_id alone.
    """
    local = local_us(settings)
    within = _range(lo_us, hi_us)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE w_st AS
        WITH s AS ({
            _statements(
                settings,
                lo_us,
                hi_us,
                f"seq, actor, {PAIR}, audit_class, len(tables) AS ntables, "
                f"CAST(({local} // {HOUR_US}) % 24 AS INTEGER) AS hour, "
                f"{group_sql(settings)} AS grp",
            )
        }
        ), o AS (
          SELECT {PAIR}, rows, status, sqlstate, command_tag LIKE 'COPY%' AS copy
          FROM events WHERE kind = 'outcome' AND {within}
        )
        SELECT s.ts_start, s.eh, s.seq, s.actor, s.day, s.hour, s.grp, s.ntables,
          CASE WHEN s.audit_class = 'READ' THEN coalesce(o.rows, 0) ELSE 0 END AS rows_read,
          coalesce(s.audit_class = 'READ' AND (o.rows >= {settings.bulk_rows} OR o.copy), false)
            AS bulk,
          coalesce(o.status = 'refused' OR o.sqlstate = '42501', false) AS refused
        FROM s LEFT JOIN o USING (ts_start, eh);

        CREATE OR REPLACE TEMP TABLE w_tables AS
        SELECT actor, day, count(DISTINCT t) AS tables FROM (
          {_statements(settings, lo_us, hi_us, "actor, unnest(tables) AS t")}
        ) GROUP BY actor, day;

        CREATE OR REPLACE TEMP TABLE w_pairs AS
        SELECT DISTINCT actor, day, subject FROM (
          {
            _statements(
                settings, lo_us, hi_us, f"actor, {subject_key('unnest(subjects)')} AS subject"
            )
        }
          UNION ALL BY NAME
          SELECT s.actor, s.day, o.subject
          FROM (SELECT {PAIR}, {subject_key("unnest(subjects)")} AS subject FROM events
                WHERE kind = 'outcome' AND {within} AND len(subjects) > 0) o
          JOIN w_st s USING (ts_start, eh)
        );
        """
    )
    con.execute(f"SET VARIABLE w_range = {sql_text(within)}")


def statement_lists(con: duckdb.DuckDBPyConnection, which: str) -> None:
    """Table `w_lists` (ts_start, eh, event_id, tables, subjects): event id, tables and
    subjects (statement and outcome together) of the `w_st` statements `which` picks."""
    within = con.execute("SELECT getvariable('w_range')").fetchone()
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE w_lists AS
        WITH k AS (SELECT ts_start, eh FROM w_st WHERE {which})
        SELECT l.* FROM (
          SELECT {PAIR}, any_value(event_id) AS event_id, flatten(list(tables)) AS tables,
            list_distinct(flatten(list(subjects))) AS subjects
          FROM events
          WHERE kind IN ('statement', 'outcome') AND {within[0] if within else "true"}
            AND ts_start IN (SELECT ts_start FROM k)
          GROUP BY ALL
        ) l SEMI JOIN k USING (ts_start, eh)
        """
    )


def build_profiles(con: duckdb.DuckDBPyConnection, settings: WatchSettings) -> None:
    """Tables `w_touch` (actor, day, subject, new), `w_ghours` (grp, day, hour, actors active),
    `w_hours` (actor, day, hour, n, usual) and `w_day` (one row per actor-day).

    An hour is usual when the actor worked in it on `USUAL_HOUR_DAYS` of their baseline days, or
    when `GROUP_HOUR_SHARE` of their peer group's actor-days in the baseline had work in it.
    """
    frame = f"RANGE BETWEEN {settings.baseline_days} PRECEDING AND 1 PRECEDING"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE w_touch AS
        SELECT actor, day, subject,
          coalesce(day - lag(day) OVER (PARTITION BY actor, subject ORDER BY day)
                   > {settings.novel_days}, true) AS new
        FROM w_pairs;

        CREATE OR REPLACE TEMP TABLE w_day0 AS
        WITH d AS (
          SELECT actor, day, arg_min(grp, (ts_start, seq)) AS grp, count(*) AS statements,
            sum(rows_read) AS rows_read, count(*) FILTER (WHERE bulk) AS bulk_reads,
            count(*) FILTER (WHERE refused) AS refusals
          FROM w_st GROUP BY actor, day
        ), t AS (
          SELECT actor, day, count(*) AS subjects, count(*) FILTER (WHERE new) AS new_subjects
          FROM w_touch GROUP BY actor, day
        )
        SELECT d.*, coalesce(w_tables.tables, 0) AS tables, coalesce(t.subjects, 0) AS subjects,
          coalesce(t.new_subjects, 0) AS new_subjects
        FROM d LEFT JOIN t USING (actor, day) LEFT JOIN w_tables USING (actor, day);

        CREATE OR REPLACE TEMP TABLE w_ahours AS
        SELECT actor, day, hour, count(*) AS n FROM w_st GROUP BY ALL;

        CREATE OR REPLACE TEMP TABLE w_ghours AS
        SELECT grp, day, hour, count(*) AS actors
        FROM w_ahours JOIN w_day0 USING (actor, day) GROUP BY ALL;

        CREATE OR REPLACE TEMP TABLE w_hours AS
        WITH own AS (
          SELECT actor, day, hour, n,
            count(*) OVER (PARTITION BY actor, hour ORDER BY day {frame}) >= {USUAL_HOUR_DAYS}
              AS usual
          FROM w_ahours
        ), gdays AS (
          SELECT grp, day, sum(count(*)) OVER (PARTITION BY grp ORDER BY day {frame}) AS total
          FROM w_day0 GROUP BY grp, day
        ), grp AS (
          SELECT grp, day, hour,
            sum(actors) OVER (PARTITION BY grp, hour ORDER BY day {frame}) AS at_hour
          FROM w_ghours
        )
        SELECT own.actor, own.day, own.hour, own.n,
          own.usual OR coalesce(grp.at_hour >= {GROUP_HOUR_SHARE} * gdays.total, false) AS usual
        FROM own JOIN w_day0 d USING (actor, day)
        JOIN grp ON grp.grp = d.grp AND grp.day = own.day AND grp.hour = own.hour
        JOIN gdays ON gdays.grp = d.grp AND gdays.day = own.day;

        CREATE OR REPLACE TEMP TABLE w_day AS
        SELECT d.*, coalesce(h.off_hours, 0) AS off_hours FROM w_day0 d LEFT JOIN (
          SELECT actor, day, sum(n) FILTER (WHERE NOT usual) AS off_hours
          FROM w_hours GROUP BY actor, day) h USING (actor, day);
        """
    )


def peer_days() -> str:
    quantiles = ", ".join(f"quantile_disc({m}, {PEER_QUANTILE}) AS q_{m}" for m in COUNTERS)
    return f"SELECT grp, day, count(*) AS actors, {quantiles} FROM w_day GROUP BY grp, day"


def build_baselines(con: duckdb.DuckDBPyConnection, settings: WatchSettings) -> None:
    """Table `w_base`: `w_day` with own_<m>, own_days, peer_<m>, peers for every row."""
    frame = f"ORDER BY day RANGE BETWEEN {settings.baseline_days} PRECEDING AND 1 PRECEDING"
    own = ", ".join(f"coalesce(median({m}) OVER own, 0) AS own_{m}" for m in COUNTERS)
    peer = ", ".join(f"coalesce(median(q_{m}) OVER g, 0) AS peer_{m}" for m in COUNTERS)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE w_base AS
        WITH o AS (
          SELECT *, {own}, count(*) OVER own AS own_days FROM w_day
          WINDOW own AS (PARTITION BY actor {frame})
        ), p AS (
          SELECT grp, day, {peer}, coalesce(max(actors) OVER g, 0) AS peers
          FROM ({peer_days()}) WINDOW g AS (PARTITION BY grp {frame})
        )
        SELECT o.*, p.* EXCLUDE (grp, day) FROM o JOIN p USING (grp, day)
        """
    )


def rows(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def profile(
    con: duckdb.DuckDBPyConnection, settings: WatchSettings, lo_us: int, hi_us: int
) -> None:
    """All of the above over [lo_us, hi_us) of the `events` view."""
    load_statements(con, settings, lo_us, hi_us)
    build_profiles(con, settings)
