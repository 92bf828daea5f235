"""Callback URL checks at submit time: http(s) only, and no private, loopback or link-local targets."""

from __future__ import annotations

import pytest

from visionq.callbacks.targets import check_callback_url
from visionq.errors import ValidationFailed

PUBLIC = [
    "https://example.com/hooks/visionq",
    "http://example.com:8080/hook?x=1",
    "https://hooks.example.org",
    "http://93.184.216.34/hook",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
]
PRIVATE = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8000/hook",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://localhost/hook",
    "http://LOCALHOST:9000/hook",
    "http://localhost./hook",
    "http://foo.localhost/hook",
]
NOT_HTTP = ["ftp://example.com/file", "file:///etc/passwd", "gopher://example.com", "example.com/hook", "https://"]


@pytest.mark.parametrize("url", PUBLIC)
def test_public_http_and_https_urls_are_accepted(url: str) -> None:
    check_callback_url(url, allow_private=False)


def test_host_names_are_accepted_without_resolving_them() -> None:
    # `.invalid` never resolves (RFC 2606): acceptance shows no DNS lookup happens at submit time.
    check_callback_url("https://callbacks.visionq.invalid/hook", allow_private=False)


@pytest.mark.parametrize("url", NOT_HTTP)
def test_urls_that_are_not_absolute_http_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed, match="http"):
        check_callback_url(url, allow_private=False)


@pytest.mark.parametrize("url", NOT_HTTP)
def test_allow_private_does_not_allow_other_schemes(url: str) -> None:
    with pytest.raises(ValidationFailed):
        check_callback_url(url, allow_private=True)


@pytest.mark.parametrize("url", PRIVATE)
def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_callback_url(url, allow_private=False)
    assert caught.value.code == "validation_error"
    assert "VISIONQ_CALLBACK_ALLOW_PRIVATE" in caught.value.detail


@pytest.mark.parametrize("url", PRIVATE)
def test_private_targets_are_accepted_when_allowed(url: str) -> None:
    check_callback_url(url, allow_private=True)
