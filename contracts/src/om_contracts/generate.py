"""Generate the committed contract documents from the models: one JSON Schema per topic and AsyncAPI 3.0.

om-contracts            # write contracts/schemas/*.json and contracts/asyncapi.json
om-contracts --check    # exit 1 if the committed files differ from the models
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from om_contracts.topics import TOPICS, Topic

TITLE = "Opinion Market events"
VERSION = "1.0.0"
OUT_DIR = Path(__file__).resolve().parents[2]  # the contracts/ folder


def message_models(topic: Topic) -> list[type[BaseModel]]:
    """The concrete models a topic carries (the members of a union, or the one model)."""
    model = topic.model
    if typing.get_origin(model) is typing.Annotated:
        model = typing.get_args(model)[0]
    members = typing.get_args(model) or (model,)
    return list(members)


def topic_schema(topic: Topic) -> dict[str, Any]:
    schema = topic.adapter.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:opinion-market:topic:{topic.name}",
        "title": topic.name,
        "description": f"{topic.description} Key: {topic.key}. Producer: {topic.producer}.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def asyncapi() -> dict[str, Any]:
    models = {m for t in TOPICS for m in message_models(t)}
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for t in TOPICS:
        channel_id = t.name.replace(".", "-")
        names = [m.__name__ for m in message_models(t)]
        for m in message_models(t):
            messages[m.__name__] = {
                "name": m.__name__,
                "title": m.__name__,
                "summary": (m.__doc__ or m.__name__).strip().splitlines()[0],
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{m.__name__}"},
                "bindings": {"kafka": {"key": {"type": "string", "description": t.key}}},
            }
        channels[channel_id] = {
            "address": t.name,
            "title": t.name,
            "description": t.description,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "tags": [{"name": t.visibility}],
            "bindings": {
                "kafka": {
                    "topic": t.name,
                    "partitions": t.partitions,
                    "topicConfiguration": {"retention.ms": t.retention_ms},
                    "bindingVersion": "0.5.0",
                }
            },
        }
        refs = [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in names]
        operations[f"publish-{channel_id}"] = {
            "action": "send",
            "title": f"{t.producer} publishes {t.name}",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": refs,
        }
        for consumer in t.consumers:
            operations[f"{consumer}-consumes-{channel_id}"] = {
                "action": "receive",
                "title": f"{consumer} consumes {t.name}",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": refs,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Kafka topics of the Opinion Market platform. Generated from contracts/; do not edit.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The embedded broker started by `make up`.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": defs["$defs"]},
    }


def documents() -> dict[Path, str]:
    docs = {OUT_DIR / "schemas" / f"{t.name}.json": topic_schema(t) for t in TOPICS}
    docs[OUT_DIR / "asyncapi.json"] = asyncapi()
    return {path: json.dumps(doc, indent=2, sort_keys=False) + "\n" for path, doc in docs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if committed documents are out of date")
    args = parser.parse_args(argv)
    wanted = documents()
    existing = set((OUT_DIR / "schemas").glob("*.json"))
    if args.check:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
        stale += sorted(existing - set(wanted))
        if stale:
            print("contracts are out of date; run `make contracts`:", *map(str, stale), sep="\n  ")
            return 1
        print(f"contracts up to date ({len(wanted)} documents)")
        return 0
    (OUT_DIR / "schemas").mkdir(exist_ok=True)
    for path in existing - set(wanted):
        path.unlink()
    for path, text in wanted.items():
        path.write_text(text)
    print(f"wrote {len(wanted)} documents to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
