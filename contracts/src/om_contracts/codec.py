"""Bytes on the wire <-> event models. JSON, UTF-8, one event per message."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from om_contracts.topics import Topic


class DecodeError(ValueError):
    """The bytes are not a valid event for the topic; `reason` says why, field by field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def key_of(topic: Topic, event: BaseModel) -> bytes:
    return str(getattr(event, topic.key)).encode()


def decode(topic: Topic, raw: bytes) -> Any:
    try:
        return topic.adapter.validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise DecodeError(f"invalid {topic.name} event: {problems}") from exc
