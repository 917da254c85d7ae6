"""The WebSocket protocol as an AsyncAPI 3 document (docs/websocket-asyncapi.json, checked against this by a test),
beside the Kafka topics' contracts/asyncapi.json. Run `python -m om_gateway.asyncapi` to rewrite it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from om_gateway.live import (
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_SLOW,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
)

DOCUMENT = Path(__file__).parents[4] / "docs" / "websocket-asyncapi.json"
Id = str | int | None


class Auth(BaseModel):
    """First message when no `token` was in the URL (within `GATEWAY_WS_AUTH_TIMEOUT_S`)."""

    type: Literal["auth"]
    token: str = Field(description="An API key or JWT.")


class Subscribe(BaseModel):
    """Join channels: `system`, `system/health`, `market/{id}`, `market/{id}/predictions`, `user/{id}`."""

    type: Literal["subscribe"]
    id: Id = None
    channels: list[str] = Field(max_length=200, examples=[["system", "market/m1"]])
    since: int | dict[str, int] | None = Field(
        default=None, description="Resume: the last seq received, for all channels or per channel."
    )


class Unsubscribe(BaseModel):
    type: Literal["unsubscribe"]
    id: Id = None
    channels: list[str]


class Ping(BaseModel):
    type: Literal["ping"]
    id: Id = None


class Welcome(BaseModel):
    """Authenticated."""

    type: Literal["welcome"]
    role: str


class Ack(BaseModel):
    type: Literal["ack"]
    id: Id
    op: Literal["subscribe", "unsubscribe"]
    channels: list[str]


class Pong(BaseModel):
    type: Literal["pong"]
    id: Id = None


class Error(BaseModel):
    type: Literal["error"]
    id: Id
    code: Literal["bad-request", "forbidden"]
    detail: str


class Snapshot(BaseModel):
    """After subscribe: the channel's latest update (`message`, null if none yet); `reset` when a resume could
    not be served from the bounded history."""

    type: Literal["snapshot"]
    channel: str
    seq: int | None
    reset: bool
    message: dict[str, Any] | None


class Backfill(BaseModel):
    """After subscribe with `since`: the `count` updates with seq > since follow, in order."""

    type: Literal["backfill"]
    channel: str
    since: int
    count: int


class Update(BaseModel):
    """An update on a channel; `seq` is its source record's Kafka offset, rising per channel and the same on
    every replica. `analytics_update` (channel `system`) has the product's fields: timestamp, system_metrics,
    top_markets; on `/api/v1/ai-analytics/ws/analytics/{client_id}` it comes without `channel` and `seq`."""

    model_config = {"extra": "allow"}
    type: Literal["analytics_update", "market_update", "prediction_update", "health_update", "user_update"]
    timestamp: str
    channel: str
    seq: int


class Heartbeat(BaseModel):
    type: Literal["heartbeat"]
    timestamp: str


CLIENT = (Auth, Subscribe, Unsubscribe, Ping)
SERVER = (Welcome, Ack, Pong, Error, Snapshot, Backfill, Update, Heartbeat)
CLOSE_CODES = {
    CLOSE_IDLE: "idle: nothing received for GATEWAY_WS_IDLE_TIMEOUT_S",
    CLOSE_UNAUTHENTICATED: "missing or invalid credential",
    CLOSE_FORBIDDEN: "the role may not connect",
    CLOSE_SLOW: "too slow: the client's queue was full; reconnect and resume with `since`",
    CLOSE_TOO_MANY: "too many connections for this credential",
    CLOSE_TOO_BIG: "a message over GATEWAY_WS_MAX_MESSAGE_BYTES",
}


def document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in (*CLIENT, *SERVER)], ref_template="#/components/schemas/{model}"
    )
    messages = {m.__name__: {"payload": {"$ref": f"#/components/schemas/{m.__name__}"}} for m in (*CLIENT, *SERVER)}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Opinion Market live updates",
            "version": "1.0.0",
            "description": "The gateway's WebSocket protocol (docs/websocket.md). Close codes: "
            + "; ".join(f"{code} {why}" for code, why in CLOSE_CODES.items()),
        },
        "servers": {"gateway": {"host": "127.0.0.1:8000", "protocol": "ws"}},
        "channels": {
            "live": {
                "address": "/api/v1/ws",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            },
            "analytics": {
                "address": "/api/v1/ai-analytics/ws/analytics/{client_id}",
                "parameters": {"client_id": {"description": "Any id the client chooses."}},
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            },
        },
        "operations": {
            "send": {
                "action": "receive",
                "channel": {"$ref": "#/channels/live"},
                "messages": [{"$ref": f"#/channels/live/messages/{m.__name__}"} for m in CLIENT],
            },
            "receive": {
                "action": "send",
                "channel": {"$ref": "#/channels/live"},
                "messages": [{"$ref": f"#/channels/live/messages/{m.__name__}"} for m in SERVER],
            },
        },
        "components": {"messages": messages, "schemas": defs["$defs"]},
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    DOCUMENT.write_text(render())
    sys.stdout.write(f"wrote {DOCUMENT}\n")
