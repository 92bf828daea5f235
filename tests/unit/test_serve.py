"""`visionq serve`'s pure parts: where it reaches the API it binds."""

from __future__ import annotations

import pytest

from visionq.cli.serve import local_url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("::1", "http://[::1]:8000"),
        ("10.1.2.3", "http://10.1.2.3:8000"),
        ("localhost", "http://localhost:8000"),
    ],
)
def test_a_wildcard_address_is_reached_on_loopback_and_ipv6_in_brackets(host: str, url: str) -> None:
    assert local_url(host, 8000) == url
