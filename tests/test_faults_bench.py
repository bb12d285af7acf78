"""bench/faults.py counts what it claims: one cheap row of the fault campaign (kill -9 of the proxy
under load) run through the campaign's own code, against the real stack."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from scalple.sandbox import Sandbox

FAULTS = Path(__file__).parent.parent / "bench" / "faults.py"


def _campaign_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_faults", FAULTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_a_kill_of_the_proxy_under_load_loses_no_executed_statement(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    faults = _campaign_module()
    campaign = faults.Campaign(sandbox, tmp_path, quick=True, clients=2)
    campaign.prepare()
    row = faults.run_one(campaign, "kill9")
    assert row.acked > 0, row
    assert row.audited >= row.acked and row.recorded >= row.acked, row
    assert row.unrecorded == 0 and row.missing == [], row
    assert row.verify == "intact", row
    assert not row.not_run and not row.notes[0].startswith("the fault's own driver failed"), row


def test_the_counts_come_from_the_markers(tmp_path: Path) -> None:
    """A marker counts in pgAudit's log only on a SESSION line and only for this run's prefix."""
    faults = _campaign_module()
    log = tmp_path / "postgres.log"
    log.write_bytes(
        b"before\n"
        b"LOG:  AUDIT: SESSION,1,1,WRITE,INSERT,,,\"INSERT INTO t VALUES ('fm_r_kill9_c0_1') "
        b"/*user='fm_r_kill9_c0_1'*/\",<not logged>\n"
        b"ERROR:  x\nSTATEMENT:  SELECT 1 /*user='fm_r_kill9_c0_2'*/\n"
        b"LOG:  AUDIT: SESSION,2,1,READ,SELECT,,,SELECT 1 /*user='fm_r_kill99_c0_3'*/,<none>\n"
        b"LOG:  AUDIT: SESSION,3,1,READ,SELECT,,,SELECT 1 /*user='fm_r_kill9_c1_1'*/,<none>\n"
    )
    found = faults.audited_markers(log, len(b"before\n"), "fm_r_kill9")
    assert found == {"fm_r_kill9_c0_1": 1, "fm_r_kill9_c1_1": 1}
