"""gap-check's judge: facts in, findings and verdict out, no server needed."""

from __future__ import annotations

from scalple.gapcheck import Facts, RoleInfo, Session, judge
from scalple.gapcheck.judge import attribution_settings, audit_classes, shared_roles

GOOD_SETTINGS = {
    "shared_preload_libraries": "pgaudit",
    "pgaudit.log": "read, write, ddl",
    "log_line_prefix": "%m [%p] user=%u db=%d app=%a client=%h ",
}


def facts(*sessions: Session, **kw: object) -> Facts:
    base: dict[str, object] = {
        "checked_as": "monitor",
        "database": "app",
        "server_version": "15",
        "can_read_all_stats": True,
        "can_read_all_settings": True,
        "sessions": sessions,
        "settings": GOOD_SETTINGS,
        "custom_settings": {"pgaudit.log_catalog": "on"},
        "extensions": ("pgaudit", "plpgsql"),
    }
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def s(
    pid: int,
    role: str,
    addr: str | None = "10.0.0.9",
    app: str = "",
    query: str = "",
    visible: bool = True,
) -> Session:
    return Session(pid, role, "app", app, addr, "idle", query or None, visible)


def by_check(report: object, check: str) -> list[str]:
    return [f.severity for f in report.findings if f.check == check]  # type: ignore[attr-defined]


def test_audit_classes_follow_pgaudit_syntax() -> None:
    assert audit_classes("all, -misc") == {"read", "write", "function", "role", "ddl"}
    assert audit_classes("none") == set()
    assert audit_classes("READ,write") == {"read", "write"}
    assert audit_classes("all,-misc_set") == {"read", "write", "function", "role", "ddl", "misc"}


def test_attribution_settings_found_in_set_and_set_config_not_extension_ones() -> None:
    assert attribution_settings("SET app.user_id = '42'") == ["app.user_id"]
    assert attribution_settings("set local myapp.tenant to 7") == ["myapp.tenant"]
    assert attribution_settings("SELECT set_config('jwt.claims.sub', $1, false)") == [
        "jwt.claims.sub"
    ]
    assert attribution_settings("SET pgaudit.log = 'none'") == []
    assert attribution_settings("SET search_path = public") == []
    assert attribution_settings("SELECT 'SET' AS x") == []
    assert attribution_settings("SET app.user_id TO DEFAULT") == []
    assert attribution_settings("SET LOCAL scalple.noop TO DEFAULT") == []  # Scalple's own
    assert attribution_settings("SET scalple.user = 'alice'") == ["scalple.user"]  # leaked past it


def test_shared_roles_need_several_sessions_or_sources() -> None:
    one_each = [s(1, "alice"), s(2, "bob")]
    assert shared_roles(one_each) == {}
    two_apps = [s(1, "app_user", app="web"), s(2, "app_user", app="worker")]
    assert list(shared_roles(two_apps)) == ["app_user"]
    pool = [s(i, "app_user") for i in range(3)]
    assert list(shared_roles(pool)) == ["app_user"]
    assert shared_roles(pool, min_sessions=4) == {}


def test_per_user_roles_with_pgaudit_is_no_gap() -> None:
    report = judge(facts(s(1, "alice", app="psql"), s(2, "bob", app="dbeaver")))
    assert report.verdict == "no_gap", report
    assert report.exit_code == 0


def test_shared_role_is_a_gap_with_its_share() -> None:
    report = judge(facts(*[s(i, "app_user", app=f"w{i}") for i in range(3)], s(9, "alice")))
    assert report.verdict == "gap" and report.exit_code == 1
    shared = next(f for f in report.findings if f.check == "shared_roles")
    assert shared.severity == "gap"
    assert "app_user: 3 of 4 client sessions (75%)" in shared.evidence[0]
    assert shared.fix and "scalple serve" in shared.fix


def test_pgaudit_missing_or_silent_is_a_gap() -> None:
    off = {**GOOD_SETTINGS, "shared_preload_libraries": ""}
    assert by_check(judge(facts(s(1, "alice"), settings=off, custom_settings={})), "pgaudit") == [
        "gap"
    ]
    silent = {**GOOD_SETTINGS, "pgaudit.log": "none"}
    assert "gap" in by_check(judge(facts(s(1, "alice"), settings=silent)), "pgaudit")
    no_reads = {**GOOD_SETTINGS, "pgaudit.log": "write, ddl"}
    assert by_check(judge(facts(s(1, "alice"), settings=no_reads)), "pgaudit") == ["warning"]


def test_hidden_preload_list_is_inferred_from_pgaudit_settings() -> None:
    hidden = {**GOOD_SETTINGS, "shared_preload_libraries": None}
    assert by_check(judge(facts(s(1, "alice"), settings=hidden)), "pgaudit") == ["ok"]
    report = judge(facts(s(1, "alice"), settings=hidden, custom_settings={}))
    assert by_check(report, "pgaudit") == ["unknown"]
    assert report.verdict == "unknown"


def test_log_line_prefix_without_user_is_a_gap_unless_structured_logs() -> None:
    bare = {**GOOD_SETTINGS, "log_line_prefix": "%m [%p] "}
    assert by_check(judge(facts(s(1, "alice"), settings=bare)), "log_line_prefix") == ["gap"]
    csv = {**bare, "log_destination": "csvlog"}
    assert by_check(judge(facts(s(1, "alice"), settings=csv)), "log_line_prefix") == ["ok"]


def test_bypass_counts_sessions_outside_the_proxy_networks() -> None:
    sessions = (s(1, "app_user", "10.0.0.5"), s(2, "app_user", "10.0.0.6"), s(3, "bob", None))
    report = judge(facts(*sessions), ["10.0.0.4/31"])
    bypass = next(f for f in report.findings if f.check == "bypass")
    assert bypass.severity == "gap"
    assert [e.split(":")[0] for e in bypass.evidence] == ["pid 2", "pid 3"]
    assert "local socket" in bypass.evidence[1]
    all_proxied = judge(facts(*sessions[:1]), ["10.0.0.5/32"])
    assert all_proxied.verdict == "no_gap", all_proxied


def test_shared_role_behind_the_proxy_is_not_a_gap_and_pgaudit_matters_less() -> None:
    pool = [s(i, "app_user", "10.0.0.5", app="web") for i in range(5)]
    off = {**GOOD_SETTINGS, "shared_preload_libraries": ""}
    report = judge(facts(*pool, settings=off, custom_settings={}), ["10.0.0.5"])
    assert report.verdict == "no_gap", report
    assert by_check(report, "pgaudit") == ["warning"]


def test_set_on_a_pooled_backend_is_a_gap_elsewhere_a_warning() -> None:
    pool = [s(i, "app_user", app=f"w{i}") for i in range(3)]
    leaked = s(7, "app_user", query="SET app.user_id = '42'")
    report = judge(facts(*pool, leaked))
    finding = next(f for f in report.findings if f.check == "set_attribution")
    assert finding.severity == "gap"
    assert "pid 7" in finding.evidence[0] and "app.user_id" in finding.evidence[0]
    lone = judge(facts(s(1, "alice", query="SET app.user_id = '42'")))
    assert by_check(lone, "set_attribution") == ["warning"]
    policy = judge(
        facts(
            s(1, "alice"),
            policies=(
                ("public.orders", "own_rows", "(owner = current_setting('app.user_id'::text))"),
            ),
        )
    )
    assert by_check(policy, "set_attribution") == ["warning"]


def test_superuser_sessions_are_a_gap_owners_a_warning() -> None:
    roles = (RoleInfo("postgres", superuser=True), RoleInfo("owner", owned_relations=4))
    report = judge(facts(s(1, "postgres", app="etl"), s(2, "owner"), roles=roles))
    assert sorted(by_check(report, "privileged_roles")) == ["gap", "warning"]


def test_unprivileged_checker_cannot_say_no_gap() -> None:
    hidden = [s(1, "alice", None, visible=False), s(2, "bob", None, visible=False)]
    report = judge(facts(*hidden, can_read_all_stats=False), ["10.0.0.0/8"])
    assert report.verdict == "unknown" and report.exit_code == 2
    assert by_check(report, "bypass") == ["unknown"]


def test_no_sessions_means_could_not_check() -> None:
    report = judge(facts())
    assert report.verdict == "unknown"
    assert by_check(report, "shared_roles") == ["unknown"]


def test_set_history_counts_as_pooled_when_its_role_is_shared() -> None:
    pool = [s(i, "app_user", app=f"w{i}") for i in range(3)]
    history = (("app_user", "SET app.user_id = $1"), ("alice", "SET app.theme = 'dark'"))
    finding = next(
        f
        for f in judge(facts(*pool, statement_texts=history)).findings
        if f.check == "set_attribution"
    )
    assert finding.severity == "gap"
    assert finding.evidence == (
        "pg_stat_statements (app_user): SET app.user_id = $1",
        "pg_stat_statements (alice): SET app.theme = 'dark'",
    )


def test_pgaudit_switched_off_for_a_role_is_a_gap() -> None:
    overrides = (
        ("app_user", "*", "pgaudit.log=none"),
        ("etl", "app", "pgaudit.log=ddl"),
        ("alice", "*", "search_path=public"),
    )
    report = judge(facts(s(1, "alice"), role_settings=overrides))
    found = [f for f in report.findings if f.check == "pgaudit"]
    assert [(f.severity, f.evidence) for f in found[1:]] == [
        ("gap", ("ALTER ROLE app_user IN DATABASE * SET pgaudit.log = 'none'",)),
        ("warning", ("ALTER ROLE etl IN DATABASE app SET pgaudit.log = 'ddl'",)),
    ]
    assert report.verdict == "gap"
