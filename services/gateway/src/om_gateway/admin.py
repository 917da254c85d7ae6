"""API keys: an admin creates one (the key is in the answer, once), lists them (without secrets), revokes one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from om_gateway.auth import ApiKeyCreated, ApiKeyIn, ApiKeyOut, Authenticator, KeyStore, Principal
from om_gateway.guard import Gate
from om_gateway.problems import documented

KeyIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", examples=["3f2a9c01b7d4"])]


def router(keys: KeyStore, auth: Authenticator, gate: Gate) -> APIRouter:
    api = APIRouter(prefix="/api/v1/admin", tags=["admin"])
    manage = gate("api-keys:manage")
    admin_only = Depends(manage)

    @api.post("/api-keys", status_code=201, response_model=ApiKeyCreated, responses=documented(400, 401, 403, 422, 429))
    async def create_key(body: ApiKeyIn, admin: Principal = admin_only) -> ApiKeyCreated:
        """Create an API key with a role. The key is shown in this answer only; store it now."""
        return await keys.create(body, created_by=admin.subject)

    @api.get(
        "/api-keys", response_model=list[ApiKeyOut], responses=documented(401, 403, 429), dependencies=[admin_only]
    )
    async def list_keys() -> list[ApiKeyOut]:
        """Every key, revoked ones included, without secrets."""
        return await keys.list()

    @api.delete(
        "/api-keys/{key_id}",
        response_model=ApiKeyOut,
        responses=documented(401, 403, 404, 422, 429),
        dependencies=[admin_only],
    )
    async def revoke_key(key_id: KeyIdPath) -> ApiKeyOut:
        """Revoke a key: refused at once by this replica, by every replica within `api_key_cache_s`."""
        revoked = await keys.revoke(key_id)
        if revoked is None:
            raise HTTPException(404, f"no API key {key_id}")
        auth.forget(key_id)
        return revoked

    return api
