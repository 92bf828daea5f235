"""X-Visionq-Signature: `sha256=<hex HMAC-SHA256 of the raw body>` keyed with VISIONQ_CALLBACK_SECRET."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Visionq-Signature"
_PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """What a receiver does: recompute the signature of the raw body and compare in constant time."""
    return hmac.compare_digest(sign(body, secret), signature)
