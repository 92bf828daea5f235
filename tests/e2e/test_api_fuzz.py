"""Schemathesis against a real `visionq serve`: every operation of /openapi.json, generated requests,
valid and not, then stateful sequences along the links it infers (submit → status → result → cancel).

What must hold for every answer: no 5xx; the status code is one the operation documents; the body matches
its documented schema and content type; a method a path does not take is a 405 that names, in `Allow`, the
ones it does. Two of schemathesis's checks judge meaning rather than schema and are left out: a schema-valid
request may still be refused (random bytes are not an image, a random name is not a model), and a cancelled
job is still there to read (cancelling is not deleting). The run is bounded and seeded here;
`VISIONQ_FUZZ_EXAMPLES=1000` runs a longer one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.serving import serving

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,unsupported_method"
)
#: Read at import: the suite's autouse fixture clears every VISIONQ_* variable before each test.
EXAMPLES = os.environ.get("VISIONQ_FUZZ_EXAMPLES", "30")
#: Seconds the whole schemathesis run may take.
FUZZ_TIMEOUT = 600


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(tmp_path_factory.mktemp("fuzz")) as url:
        yield url


def test_no_operation_answers_5xx_or_off_its_documented_schema(service: str, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [
            str(st),
            "run",
            f"{service}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            EXAMPLES,
            "--seed",
            "20261127",
            "--workers",
            "2",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout or " passed" in run.stdout, run.stdout[-2000:]
