"""The envelope every event carries: identity, type, version and the two clocks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


#: A timezone-aware time, normalised to UTC so every event writes times the same way.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda value: value.astimezone(UTC))]


class Envelope(BaseModel):
    """Fields shared by every event. Subclasses fix `event_type` with a Literal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id; consumers dedupe on it.")
    event_type: str
    schema_version: int = Field(default=1, ge=1, description="Major version; a breaking change is a new topic.")
    occurred_at: UtcDatetime = Field(description="Event time (UTC): when it happened in the domain.")
    produced_at: UtcDatetime = Field(default_factory=utcnow, description="When the producer emitted it.")
    producer: str = Field(min_length=1, description="Service that produced the event.")


_DERIVED = uuid.UUID("6f4d3c1e-0b1a-4d2e-9c51-0d7e3f3a9b10")


def derived_event_id(source_event_id: uuid.UUID, producer: str) -> uuid.UUID:
    """A stable id for an event derived from another one.

    Reprocessing a redelivered source event yields the same derived id, so downstream
    consumers dedupe the republished event instead of counting it twice.
    """
    return uuid.uuid5(_DERIVED, f"{producer}:{source_event_id}")
