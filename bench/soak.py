"""The full soak: 2,000 jobs over mixed priorities and models while worker processes are SIGKILLed and Redis
restarts at random (seeded); then what became of every job. CI runs a reduced one
(`tests/integration/test_soak.py`).

    .venv/bin/python bench/soak.py [--jobs 2000] [--seed 20261127] [--faults 30] [--json var/bench/soak.json]
    .venv/bin/python bench/soak.py --topology sentinel --jobs 1000 --faults 5 --redis-share 1   # failovers only
    .venv/bin/python bench/soak.py --topology sentinel --jobs 1000 --faults 5 --redis-share 1 --replicas 2
    .venv/bin/python bench/soak.py --topology cluster --jobs 1000 --faults 5 --redis-share 1   # Cluster masters

On `--topology sentinel` a Redis fault SIGKILLs the master a Sentinel set-up names; on `--topology cluster`, a master
of a Redis Cluster (3 masters, 3 replicas) that holds job state, the broker on the machine's RabbitMQ
(VISIONQ_TEST_AMQP_URL). The report says how long the service took to accept work again after each, and how many
submits it refused meanwhile.

Exits 1 unless every job was accepted and completed exactly once (none lost, duplicated or failed), as CI's test
requires.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import cat_variants
from integration.soak import SoakPlan, run_soak


def main() -> int:
    defaults = SoakPlan()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--faults", type=int, default=defaults.faults, help="worker kills and Redis restarts")
    parser.add_argument(
        "--topology",
        choices=["single", "sentinel", "cluster"],
        default=defaults.topology,
        help="single: one Redis, restarted; sentinel: a master, a replica and three sentinels, the master SIGKILLed",
    )
    parser.add_argument("--redis-share", type=float, default=defaults.redis_share, help="the share of Redis faults")
    parser.add_argument("--replicas", type=int, default=defaults.replicas, help="sentinel: the master's replicas")
    parser.add_argument("--json", type=Path, default=Path("var/bench/soak.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    plan = SoakPlan(
        jobs=args.jobs,
        seed=args.seed,
        workers=args.workers,
        faults=args.faults,
        topology=args.topology,
        redis_share=args.redis_share,
        replicas=args.replicas,
    )
    with tempfile.TemporaryDirectory() as root:
        report = run_soak(plan, Path(root), cat_variants()["jpeg"])
    sys.stdout.write(report.summary() + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    sound = not (report.lost or report.duplicated or report.archive_mismatches or report.refusals)
    sound = sound and report.accepted == plan.jobs and report.outcomes == {"completed": plan.jobs}
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
