"""The per-route check: authenticate, count against the rate limits (per IP, then per principal, by role),
and apply the role × operation matrix. Routes declare their operation; "own" cells are checked by the route
with `require_own` once it knows whose data is asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from om_gateway.access import MATRIX, allowed
from om_gateway.auth import Authenticator, Principal, Unauthenticated
from om_gateway.ratelimit import RateLimits

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`omk_...`, created by an admin) or a JWT: `Authorization: Bearer <credential>`.",
)
bearer = Depends(_bearer)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Gate:
    def __init__(self, auth: Authenticator, limits: RateLimits) -> None:
        self.auth = auth
        self.limits = limits

    def __call__(
        self, operation: str, *, read: Callable[[Request], tuple[str, str]] | None = None
    ) -> Callable[..., Awaitable[Principal]]:
        """`read` names a Redis hash field (key, field) to fetch in the rate limit's round trip: the route finds it
        in `request.state.prefetched` (None on a miss), so a cached read costs one round trip in all."""
        if operation not in MATRIX:  # a route naming an operation the matrix lacks: fail at start, not per request
            raise ValueError(f"unknown operation {operation!r}")

        async def check(request: Request, credentials: HTTPAuthorizationCredentials | None = bearer) -> Principal:
            ip = client_ip(request)
            try:
                principal = await self.auth.authenticate(
                    f"{credentials.scheme} {credentials.credentials}" if credentials else None
                )
            except Unauthenticated as exc:
                await self._limit("anonymous", f"ip:{ip}")
                raise HTTPException(401, str(exc), headers={"www-authenticate": "Bearer"}) from exc
            request.state.prefetched = await self._limit(
                principal.role.value,
                f"ip:{ip}",
                f"principal:{principal.rate_key}",
                read=read(request) if read is not None else None,
            )
            if MATRIX[operation].get(principal.role, "no") == "no":
                raise HTTPException(403, f"role {principal.role} may not do {operation}")
            request.state.principal = principal
            return principal

        return check

    async def _limit(self, role: str, *identities: str, read: tuple[str, str] | None = None) -> bytes | None:
        verdict = await self.limits.hit(role, *identities, read=read)
        if not verdict.allowed:
            raise HTTPException(
                429, f"rate limit of role {role} reached", headers={"retry-after": str(verdict.retry_after_s)}
            )
        return verdict.read


def require_own(principal: Principal, operation: str, owner: str) -> None:
    """403 unless the principal may do `operation` on user `owner`'s data."""
    if not allowed(operation, principal.role, subject=principal.subject, owner=owner):
        raise HTTPException(403, f"role {principal.role} may do {operation} only for its own user id")
