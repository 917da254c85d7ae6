"""Who is calling: API keys (hashed at rest) and JWT bearer tokens (HS256, or RS256 from a JWKS URL), both sent
as `Authorization: Bearer <credential>`. Parsing and hashing are pure; the key store is the gateway's schema."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from pydantic import BaseModel, Field

from om_gateway.access import Role
from om_gateway.settings import GatewaySettings

KEY_PREFIX = "omk_"


class Unauthenticated(Exception):
    """The credential is missing, malformed, unknown, revoked, expired or forged."""


@dataclass(frozen=True)
class Principal:
    subject: str  # the user id a viewer/trader acts as; a name for services and admins
    role: Role
    credential: str  # "api-key:<id>", "jwt" or "bootstrap"

    @property
    def rate_key(self) -> str:
        return f"{self.credential}:{self.subject}"


# --- API keys ----------------------------------------------------------------------------------------


def new_api_key() -> tuple[str, str, bytes]:
    """A fresh key: (key id, the full key to show once, the hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> bytes:
    # The secret is 256 random bits, so a plain SHA-256 cannot be brute-forced; a slow KDF would only cost latency.
    return hashlib.sha256(secret.encode()).digest()


def split_api_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 12 or not secret:
        return None
    return key_id, secret


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$", description="What the key is for.")
    role: Role
    subject: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="User id the key acts as (default: the name).",
    )


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    role: Role
    subject: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="The key itself. Shown only now: store it; only its hash is kept.")


class KeyStore:
    """API keys in the gateway's PostgreSQL schema."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def create(self, body: ApiKeyIn, created_by: str) -> ApiKeyCreated:
        key_id, key, digest = new_api_key()
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO api_keys (key_id, name, role, subject, secret_hash, created_by) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (key_id, body.name, body.role.value, body.subject or body.name, digest, created_by),
            )
            row = await cur.fetchone()
        return ApiKeyCreated(**_public(row), api_key=key)

    async def list(self) -> list[ApiKeyOut]:
        async with self.db.transaction() as conn:
            cur = await conn.execute("SELECT * FROM api_keys ORDER BY created_at, key_id")
            return [ApiKeyOut(**_public(row)) for row in await cur.fetchall()]

    async def revoke(self, key_id: str) -> ApiKeyOut | None:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s RETURNING *",
                (key_id,),
            )
            row = await cur.fetchone()
        return ApiKeyOut(**_public(row)) if row else None

    async def find(self, key_id: str) -> dict[str, Any] | None:
        async with self.db.transaction() as conn:
            cur = await conn.execute("SELECT * FROM api_keys WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
            row: dict[str, Any] | None = await cur.fetchone()
            return row


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "secret_hash"}


# --- JWT ---------------------------------------------------------------------------------------------


class JwtVerifier:
    def __init__(self, settings: GatewaySettings) -> None:
        self.secret = settings.hs256_secret()
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_s

    async def verify(self, token: str) -> Principal:
        if self.jwks is not None:
            try:
                signing = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"token: {exc}") from exc
            key: Any = signing.key
            algorithms = ["RS256"]
        elif self.secret:
            key, algorithms = self.secret, ["HS256"]
        else:
            raise Unauthenticated("this gateway accepts no JWTs (no key configured); use an API key")
        try:
            # Only the configured algorithm is accepted: `alg: none` and algorithm confusion are refused.
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token: {exc}") from exc
        try:
            role = Role(claims.get("role", ""))
        except ValueError as exc:
            raise Unauthenticated(f"token: unknown role {claims.get('role')!r}") from exc
        return Principal(subject=str(claims["sub"]), role=role, credential="jwt")


# --- the authenticator -------------------------------------------------------------------------------


class Authenticator:
    def __init__(self, settings: GatewaySettings, keys: KeyStore | None) -> None:
        self.jwt = JwtVerifier(settings)
        self.keys = keys
        self.cache_s = settings.api_key_cache_s
        self._cache: dict[str, tuple[float, bytes, Principal]] = {}
        self.bootstrap: bytes | None = None
        if settings.admin_api_key_file is not None:
            self.bootstrap = hashlib.sha256(settings.admin_api_key_file.read_text().strip().encode()).digest()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization` header value (or a bare credential)."""
        if not authorization:
            raise Unauthenticated("send Authorization: Bearer <API key or JWT>")
        scheme, _, credential = authorization.strip().partition(" ")
        if not credential:
            credential, scheme = scheme, "bearer"
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthenticated("use the Bearer scheme: Authorization: Bearer <API key or JWT>")
        return await self.credential(credential.strip())

    async def credential(self, credential: str) -> Principal:
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            return await self.jwt.verify(credential)
        if self.bootstrap is not None and hmac.compare_digest(
            hashlib.sha256(credential.encode()).digest(), self.bootstrap
        ):
            return Principal(subject="admin", role=Role.admin, credential="bootstrap")
        parts = split_api_key(credential)
        if parts is None or self.keys is None:
            raise Unauthenticated("unknown credential")
        key_id, secret = parts
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or cached[0] < now:
            row = await self.keys.find(key_id)
            if row is None:
                self._cache.pop(key_id, None)
                raise Unauthenticated("unknown or revoked API key")
            principal = Principal(subject=row["subject"], role=Role(row["role"]), credential=f"api-key:{key_id}")
            cached = (now + self.cache_s, bytes(row["secret_hash"]), principal)
            self._cache[key_id] = cached
        if not hmac.compare_digest(digest, cached[1]):
            raise Unauthenticated("unknown or revoked API key")
        return cached[2]

    def forget(self, key_id: str) -> None:
        """Drop a revoked key from this replica's cache at once (other replicas within `api_key_cache_s`)."""
        self._cache.pop(key_id, None)
