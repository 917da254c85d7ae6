"""Who may do what: the role × operation matrix. The docs' table is rendered from it (docs/api.md is checked
against `matrix_markdown()` by a test), the routes enforce it, and a test checks every cell over HTTP."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Cell = Literal["yes", "own", "no"]


class Role(StrEnum):
    viewer = "viewer"
    trader = "trader"
    analyst = "analyst"
    admin = "admin"
    service = "service"


ROLES: tuple[Role, ...] = tuple(Role)

_ALL: dict[Role, Cell] = {r: "yes" for r in ROLES}
_WRITERS: dict[Role, Cell] = {Role.admin: "yes", Role.service: "yes"}
_USER_DATA: dict[Role, Cell] = {
    Role.viewer: "own",
    Role.trader: "own",
    Role.analyst: "yes",
    Role.admin: "yes",
    Role.service: "yes",
}

#: operation → {role: cell}; a role not named gets "no". "own" means only for the principal's own user id.
MATRIX: dict[str, dict[Role, Cell]] = {
    "markets:read": _ALL,
    "markets:write": _WRITERS,
    "trades:write": {Role.trader: "own", Role.admin: "yes", Role.service: "yes"},
    "signals:write": {Role.analyst: "yes", **_WRITERS},
    "predictions:read": _ALL,
    "analytics:read": _ALL,
    "users:read": _USER_DATA,
    "models:read": _ALL,
    "live:connect": _ALL,
    "api-keys:manage": {Role.admin: "yes"},
    "operations:read": {Role.admin: "yes", Role.service: "yes"},
}

#: What each operation covers, for the docs.
OPERATIONS: dict[str, str] = {
    "markets:read": "list markets, a market, its trades, price history and candles; leaderboards",
    "markets:write": "create, close, resolve, cancel markets",
    "trades:write": "record trades (a trader only with their own `user_id`)",
    "signals:write": "record social/news signals",
    "predictions:read": "predictions: one, batch, history",
    "analytics:read": "market and system analytics, system health, market insights, calibration",
    "users:read": "a user's analytics, portfolio and portfolio insights (viewer/trader: their own only)",
    "models:read": "model versions",
    "live:connect": "the WebSocket (channel `user/{id}` follows `users:read`)",
    "api-keys:manage": "create, list, revoke API keys",
    "operations:read": "`/metrics`, `/docs`, `/openapi.json`, the dependency detail of `/ready`",
}


def allowed(operation: str, role: Role, *, subject: str | None = None, owner: str | None = None) -> bool:
    """Whether `role` (acting as user `subject`) may do `operation`, on data of user `owner` if any."""
    cell = MATRIX[operation].get(role, "no")
    if cell == "own":
        return owner is not None and subject is not None and owner == subject
    return cell == "yes"


def matrix_markdown() -> str:
    """The docs' table: one row per operation, one column per role."""
    lines = [
        "| operation | what | " + " | ".join(ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for operation, cells in MATRIX.items():
        marks = {"yes": "✓", "own": "own", "no": "—"}
        row = " | ".join(marks[cells.get(role, "no")] for role in ROLES)
        lines.append(f"| `{operation}` | {OPERATIONS[operation]} | {row} |")
    return "\n".join(lines)
