"""The shipped gateway and the API agree on idle connections: nginx lets go of an idle upstream connection before
the API closes it, so that nginx never sends a request on a connection the API is closing (a streamed
`POST /classify` cannot be passed on to another replica: the client would get a 502)."""

from __future__ import annotations

import re

from tests_support import REPO
from visionq.api.app import KEEP_ALIVE_SECONDS, server_config
from visionq.settings import Settings

UPSTREAM = REPO / "deploy" / "nginx" / "visionq" / "upstream.conf"


def test_nginx_lets_go_of_an_idle_api_connection_before_the_api_closes_it() -> None:
    found = re.search(r"^\s*keepalive_timeout\s+(\d+)s;", UPSTREAM.read_text(), re.MULTILINE)

    assert found is not None, "the upstream block sets keepalive_timeout (nginx's default, 60 s, is implicit)"
    assert int(found.group(1)) < KEEP_ALIVE_SECONDS


def test_the_api_keeps_idle_connections_as_long_as_it_says() -> None:
    config = server_config(Settings(), port=0)

    assert config.timeout_keep_alive == KEEP_ALIVE_SECONDS
    assert KEEP_ALIVE_SECONDS > 60, "longer than a cloud load balancer's default idle timeout too"
