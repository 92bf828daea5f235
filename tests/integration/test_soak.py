"""A reduced soak in CI (`bench/soak.py` runs the full one): jobs over mixed priorities and models while
worker processes are SIGKILLed and Redis restarts at random, seeded. Every accepted job must complete, once,
as docs/reliability.md claims: a fault costs the jobs in hand an attempt, and each job has three."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from factories import cat_variants
from integration.soak import SoakPlan, run_soak

PLAN = SoakPlan(jobs=120, seed=20261127, faults=6, settle_timeout=120)


@pytest.mark.timeout(300)
def test_a_soak_with_worker_kills_and_redis_restarts_completes_every_job_once(tmp_path: Path) -> None:
    report = run_soak(PLAN, tmp_path, cat_variants()["jpeg"])
    sys.stdout.write(report.summary() + "\n")  # the figures, with -s

    assert report.worker_kills + report.redis_restarts == PLAN.faults
    assert report.worker_kills >= 1, "workers were killed"
    assert report.redis_restarts >= 1, "Redis was restarted"
    assert len(report.failovers) == report.redis_restarts, "the service accepted work again after each restart"
    assert report.refusals == []
    assert report.accepted == PLAN.jobs
    assert report.lost == []
    assert report.duplicated == 0
    assert report.archive_mismatches == []
    assert report.outcomes == {"completed": PLAN.jobs}, report.failures
