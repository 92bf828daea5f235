"""POST /auth/token (an API key → an access and a refresh token) and POST /auth/refresh (rotate them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.dependencies import PrincipalDep, StateDep
from visionq.api.problems import problem_responses
from visionq.auth import keys as api_keys
from visionq.auth.principals import key_principal
from visionq.auth.tokens import TokenIssuer, TokenPair
from visionq.wire.schemas import RefreshRequest, TokenBody

router = APIRouter(prefix="/auth", tags=["auth"])


def _issuer(state: StateDep) -> TokenIssuer:
    if state.auth.tokens is None:
        raise errors.JobNotFound("authentication is off on this service (VISIONQ_AUTH=off): there are no tokens")
    return state.auth.tokens


def _body(pair: TokenPair) -> TokenBody:
    return TokenBody(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)


@router.post(
    "/token",
    response_model=TokenBody,
    responses=problem_responses(errors.Unauthorized, errors.RateLimited, errors.JobNotFound),
)
async def issue_token(request: Request, principal: PrincipalDep, state: StateDep) -> TokenBody:
    """Exchange the API key of `X-API-Key` for a short-lived access token and a refresh token."""
    issuer = _issuer(state)
    if "x-api-key" not in request.headers or "authorization" in request.headers:
        raise errors.Unauthorized("POST /auth/token takes an API key in `X-API-Key`, and nothing else")
    return _body(await issuer.issue(principal))


@router.post(
    "/refresh",
    response_model=TokenBody,
    responses=problem_responses(errors.Unauthorized, errors.RateLimited, errors.JobNotFound),
)
async def refresh_token(body: RefreshRequest, request: Request, state: StateDep) -> TokenBody:
    """A new access token and refresh token for a refresh token, which is then no longer valid."""
    quota = await state.rate_limiter.check_address(request)
    if quota is not None and quota.exceeded is not None:
        raise quota.refusal()
    issuer = _issuer(state)
    redeemed = await issuer.redeem(body.refresh_token)
    if redeemed is None:
        raise errors.Unauthorized("the refresh token is unknown, expired or already used; log in with your API key")
    key_id, _ = redeemed
    info = await run_in_threadpool(api_keys.get_key, state.archive.engine, key_id)
    if info is None or not info.active:
        raise errors.Unauthorized("the API key behind this refresh token has been revoked")
    return _body(await issuer.issue(key_principal(info.key_id, info.role)))
