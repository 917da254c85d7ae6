"""Errors as `application/problem+json` (RFC 9457). Every problem the API returns has one of the documented
types below; upstream services' errors are translated into them, so clients see one error format."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:opinion-market:problem:"

#: status → (type slug, title). The slugs are the documented problem types (docs/api.md, "Errors").
PROBLEM_TYPES: dict[int, tuple[str, str]] = {
    400: ("bad-request", "The request is malformed"),
    401: ("unauthenticated", "Missing or invalid credentials"),
    403: ("forbidden", "Your role may not do this"),
    404: ("not-found", "No such resource"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflicts with the resource's state"),
    413: ("payload-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Send application/json"),
    422: ("validation", "The request is invalid"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal", "Internal error"),
    502: ("upstream-error", "A service behind the gateway failed"),
    503: ("unavailable", "A service behind the gateway is unavailable"),
    504: ("upstream-timeout", "A service behind the gateway did not answer in time"),
}


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: body/query/path/header, then the field path.")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, with `errors` listing each invalid field (422)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(examples=[TYPE_PREFIX + "validation"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


def problem_type(status: int) -> str:
    slug, _ = PROBLEM_TYPES.get(status, ("internal" if status >= 500 else "bad-request", ""))
    return TYPE_PREFIX + slug


def problem(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    slug_title = PROBLEM_TYPES.get(status)
    body: dict[str, Any] = {
        "type": problem_type(status),
        "title": slug_title[1] if slug_title else HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_bytes(status: int, detail: str) -> bytes:
    """The same body, for raw ASGI middleware that answers before FastAPI does."""
    return json.dumps(
        {"type": problem_type(status), "title": PROBLEM_TYPES[status][1], "status": status, "detail": detail}
    ).encode()


def field_errors(raw: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in raw]


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, each with the problem schema and type."""
    return {
        status: {
            "description": f"{PROBLEM_TYPES[status][1]} (type `{problem_type(status)}`)",
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def add_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put Problem and FieldError into the document's components (the responses above refer to them)."""
    _, defs = models_json_schema([(Problem, "validation")], ref_template="#/components/schemas/{model}")
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
    return openapi


def install(app: FastAPI) -> None:
    """Make every error the app raises a problem."""

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):  # (registered for it only; narrows the type)
            raise exc
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem(exc.status_code, detail, instance=request.url.path, headers=getattr(exc, "headers", None))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):  # (registered for it only; narrows the type)
            raise exc
        errors = field_errors(list(exc.errors()))
        where = ", ".join(".".join(map(str, e["loc"])) for e in errors[:5])
        return problem(422, f"invalid: {where}", instance=request.url.path, errors=errors)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        return problem(500, "internal error; it has been logged", instance=request.url.path)

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_crash)
