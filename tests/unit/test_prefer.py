"""`Prefer: wait=N` (RFC 7240) as GET /result and POST /classify read it: lenient, capped, never refused."""

from __future__ import annotations

import pytest

from visionq.api.waiting import MAX_WAIT, parse_prefer_wait, preference_applied


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=5", 5),
        ("wait=0", 0),
        ("respond-async, wait=10", 10),
        ("  WAIT = 7  ", 7),
        ("Wait=7", 7),
        ("handling=lenient,wait=3;foo=bar", 3),
        ('wait="12"', 12),
        ("wait=60", 60),
        ("wait=61", MAX_WAIT),
        ("wait=999", MAX_WAIT),
        ("wait=99999999999999999999999", MAX_WAIT),
        ("wait=4, wait=9", 4),
    ],
)
def test_a_wait_preference_gives_its_seconds_capped_at_sixty(header: str, seconds: int) -> None:
    assert parse_prefer_wait(header) == seconds


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "respond-async",
        "return=minimal",
        "wait",
        "wait=",
        "wait=-1",
        "wait=+5",
        "wait=1.5",
        "wait=5s",
        "wait=soon",
        "wait=٣",  # an Arabic-Indic digit: a digit to Python, not to HTTP
        "waiting=5",
        "wait=x, wait=5",  # only the first instance of a preference counts
    ],
)
def test_no_or_a_malformed_wait_preference_is_ignored(header: str | None) -> None:
    assert parse_prefer_wait(header) is None


def test_the_applied_preference_names_the_seconds_applied() -> None:
    assert preference_applied(60) == {"Preference-Applied": "wait=60"}
    assert preference_applied(0) == {"Preference-Applied": "wait=0"}
    assert preference_applied(None) == {}
