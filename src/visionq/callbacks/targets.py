"""Which callback URLs visionq agrees to call (a guard against server-side request forgery)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from visionq.errors import ValidationFailed

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string denotes by itself, including the legacy IPv4 forms that
    resolvers accept (`127.1`, `2130706433`, `0x7f000001`); None for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_callback_url(url: str, *, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and, unless allowed, literal private/loopback/link-local targets.

    Host names are resolved and checked again when the callback is delivered, since DNS can
    change between submit and delivery.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("callback_url must be an absolute http:// or https:// URL")
    if allow_private:
        return
    host = parts.hostname.lower().rstrip(".")
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        raise ValidationFailed(
            f"callback_url host {host!r} is local; set VISIONQ_CALLBACK_ALLOW_PRIVATE=true to allow it"
        )
    address = _literal_address(host)
    if address is None:
        return
    if not is_public_address(address):
        raise ValidationFailed(
            f"callback_url address {host} is in a private, loopback or link-local range; "
            "set VISIONQ_CALLBACK_ALLOW_PRIVATE=true to allow it"
        )


class CallbackRefused(Exception):
    """The callback's target is not one visionq may call: delivery stops without retrying."""


def check_resolved_target(url: str, *, allow_private: bool) -> None:
    """At delivery time: check the URL again and resolve its host; refuse it if any address it resolves
    to is private, loopback or link-local (unless allowed). Raises CallbackRefused, or OSError when the
    name does not resolve now (worth a retry)."""
    try:
        check_callback_url(url, allow_private=allow_private)
    except ValidationFailed as exc:
        raise CallbackRefused(exc.detail) from exc
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for *_, sockaddr in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP):
        address = ipaddress.ip_address(sockaddr[0])
        if not is_public_address(address):
            raise CallbackRefused(
                f"{host} resolves to {address}, in a private, loopback or link-local range; "
                "set VISIONQ_CALLBACK_ALLOW_PRIVATE=true to allow it"
            )
