"""The printed table of a throughput run (`throughput.json` holds the same figures, and more)."""

from __future__ import annotations

from typing import Any

from pinned import ROLES

#: Added to the 1 job/s p50 over one image alone on an idle core that issue 12 aims at, ms.
IDLE_OVERHEAD_TARGET_MS = 10.0


def table(report: dict[str, Any]) -> str:
    rows = [
        *_setup(report),
        *_throughput(report),
        *_costs(report),
        *_multi(report),
        *_waited(report),
        *_latency(report),
    ]
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name:<{width}}  {value}\n" for name, value in rows)


def _setup(report: dict[str, Any]) -> list[tuple[str, str]]:
    core, client = report["service_core"], report["client_core"]
    rows = [
        ("layout", f"service and ceiling on core {core}, load generator on core {client}"),
        ("machine", report.get("machine", "?")),
        ("python", report.get("python", "?")),
        ("service's log level", report.get("log_level", "WARNING")),
        ("photo", f"{report['photo_bytes'] / 1024:.0f} KiB JPEG, 1600x1600"),
        ("model", f"{report['model']} ({report['runtime']}, {report['precision']})"),
        (
            "worker",
            f"{report.get('pool', 'prefork')} pool, {report.get('worker_concurrency', report['processes'])} job(s) at "
            f"once on one inference thread each, {report['concurrency']} jobs in flight",
        ),
        (f"one image alone on core {core}", f"{report['one_image']['median_ms']:.1f} ms (median of "
         f"{report['one_image']['images']} in a row, run_classification)"),
    ]  # fmt: skip
    paced = report.get("one_image_paced")
    if paced:
        rows.append(("  one per second", f"{paced['median_ms']:.1f} ms (median of {paced['images']})"))
    return rows


def _throughput(report: dict[str, Any]) -> list[tuple[str, str]]:
    summary, ceilings, services = report["summary"], report["ceiling"], report["service"]
    idle = max(c["service_idle_cpu_share"] for c in ceilings)
    return [
        (
            f"ceiling, {report['processes']} processes",
            f"{_each(c['images_per_s'] for c in ceilings)} images/s, mean {summary['ceiling_images_per_s']:.1f} "
            f"(the idle service took ≤{idle:.1%} of the core meanwhile)",
        ),
        (
            "service at saturation",
            f"{_each(s['jobs_per_s'] for s in services)} jobs/s, mean {summary['service_jobs_per_s']:.1f} "
            f"(windows of {_each((s['jobs'] for s in services), '.0f')} jobs)",
        ),
        ("ratio service / ceiling", f"{summary['ratio']:.2f}"),
    ]


def _costs(report: dict[str, Any]) -> list[tuple[str, str]]:
    summary = report["summary"]
    service = summary["service"]
    redis = service["redis_per_job"]
    busy = service["core_busy"]
    client = report["client_core"]
    return [
        (
            "service CPU per job",
            f"{service['service_cpu_per_job_ms']:.1f} ms (context switches per job: waits, preempted)",
        ),
        *_by_role(service),
        ("ceiling CPU per image", f"{summary['ceiling_cpu_per_image_ms']:.1f} ms (decode + inference + top-5)"),
        ("service CPU outside decode+inference", f"{summary['outside_decode_inference_ms']:.1f} ms per job"),
        ("Redis per job", _redis(redis)),
        (
            f"core {report['service_core']} in the windows",
            f"{busy[report['service_core']]:.0%} busy: the service {service['service_cpu_share']:.0%}, the rest "
            "other processes of the machine",
        ),
        (
            f"load generator, core {client}",
            f"{service['load_generator_cpu_per_job_ms']:.1f} ms CPU per job, core {client} {busy[client]:.0%} busy",
        ),
    ]


def _by_role(service: dict[str, Any]) -> list[tuple[str, str]]:
    roles, switches = service["cpu_per_job_ms"], service["switches_per_job"]
    return [
        (
            f"  {role}",
            f"{roles[role]:4.1f} ms  ({switches[role]['voluntary']:.0f}, {switches[role]['involuntary']:.0f})",
        )
        for role in [*ROLES, *sorted(roles.keys() - set(ROLES))]
    ]


def _multi(report: dict[str, Any]) -> list[tuple[str, str]]:
    multi = report["multi"]
    if multi.get("skipped"):
        return [("multi-image request", multi["detail"])]
    if not multi["supported"]:
        return [("multi-image request", f"not supported by this server ({multi['detail']})")]
    roles = multi["cpu_per_job_ms"]
    return [
        (
            f"multi-image, {multi['parts']} per request",
            f"{multi['jobs_per_s']:.1f} jobs/s (ratio {multi['ratio']:.2f}), service CPU per job "
            f"{multi['service_cpu_per_job_ms']:.1f} ms",
        ),
        ("  by role", ", ".join(f"{role} {ms:.1f}" for role, ms in roles.items()) + " ms"),
        ("  Redis per job", _redis(multi["redis_per_job"])),
    ]


def _waited(report: dict[str, Any]) -> list[tuple[str, str]]:
    waited = report.get("waited")
    if not waited:
        return []
    roles = waited["cpu_per_job_ms"]
    return [
        (
            "result in the answer (Prefer: wait)",
            f"{waited['jobs_per_s']:.1f} jobs/s (ratio {waited['ratio']:.2f}), service CPU per job "
            f"{waited['service_cpu_per_job_ms']:.1f} ms",
        ),
        ("  by role", ", ".join(f"{role} {ms:.1f}" for role, ms in roles.items()) + " ms"),
    ]


def _latency(report: dict[str, Any]) -> list[tuple[str, str]]:
    busy, idle = report["latency"]["busy"], report["latency"]["idle"]
    overhead = report["summary"]["idle_overhead_ms"]
    rows = [
        (f"latency at {busy['per_s']:g} jobs/s", _percentiles(busy)),
        ("latency at 1 job/s", _percentiles(idle)),
        ("  p50 − one image alone", f"{overhead:+.1f} ms (target +{IDLE_OVERHEAD_TARGET_MS:.0f} ms; "
         "one per second, as the service gets them)"),
    ]  # fmt: skip
    warm = report["summary"].get("idle_overhead_warm_ms")
    if warm is not None:
        rows.append(("  p50 − one image, in a row", f"{warm:+.1f} ms (warm caches)"))
    if idle.get("median_phases_ms"):
        rows.append(("  medians at 1 job/s", _phases(idle["median_phases_ms"])))
    waited = report["latency"].get("idle_waited")
    if waited is not None and "p50_ms" in waited:
        rows.append((
            "  the result in the answer",
            f"p50 {waited['p50_ms']:.0f} ms, {report['summary']['idle_overhead_waited_ms']:+.1f} ms over one image "
            "alone (Prefer: wait, as the SDK's classify())",
        ))  # fmt: skip
    failures = _failures(report)
    if failures:
        rows.append(("jobs not completed", ", ".join(f"{name}: {codes}" for name, codes in failures.items())))
    return rows


def _failures(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """How the jobs that did not complete ended, by measure."""
    measures = [(f"service pass {n}", s["latency"]) for n, s in enumerate(report["service"], 1)]
    if report["multi"]["supported"]:
        measures.append(("multi-image", report["multi"]["latency"]))
    if report.get("waited"):
        measures.append(("result in the answer", report["waited"]["latency"]))
    measures += [(f"latency {name} ({part['per_s']:g}/s)", part) for name, part in report["latency"].items()]
    return {name: measured["failed"] for name, measured in measures if measured["failed"]}


def _percentiles(measured: dict[str, Any]) -> str:
    if "p50_ms" not in measured:
        return f"{measured['completed']} of {measured['jobs']} jobs completed: too few for percentiles"
    return (
        f"p50 {measured['p50_ms']:.0f} ms, p95 {measured['p95_ms']:.0f} ms, p99 {measured['p99_ms']:.0f} ms "
        f"({measured['jobs']} jobs)"
    )


def _phases(phases: dict[str, float]) -> str:
    return (
        f"POST round trip {phases['submit']:.1f} ms; accepted → result stored {phases['server']:.1f} ms "
        f"(queued {phases['queue']:.1f}, processing {phases['processing']:.1f})"
    )


def _redis(per_job: dict[str, float]) -> str:
    return (
        f"{per_job['total_commands_processed']:.0f} commands, {per_job['total_net_input_bytes'] / 1024:.1f} KiB in, "
        f"{per_job['total_net_output_bytes'] / 1024:.1f} KiB out"
    )


def _each(values: Any, spec: str = ".1f") -> str:
    return ", ".join(format(value, spec) for value in values)
