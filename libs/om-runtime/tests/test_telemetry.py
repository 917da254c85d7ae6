"""om_runtime.telemetry: JSON log lines that carry the active trace, and tracing configured from OTEL_* variables.

Nothing here touches the process-wide tracer provider or leaves exporter threads running."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import trace_exporter as otlp_http
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from om_runtime.telemetry import JsonFormatter, setup_logging, setup_tracing

OTEL_VARS = (
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_RESOURCE_ATTRIBUTES",
)


def log_record(message: str = "hello %s", args: tuple[object, ...] = ("world",)) -> logging.LogRecord:
    return logging.LogRecord("om.test", logging.INFO, __file__, 1, message, args, None)


# --- JsonFormatter ----------------------------------------------------------------------------------


def test_a_line_is_one_json_object_with_the_fields() -> None:
    line = JsonFormatter("feature").format(log_record())

    assert "\n" not in line
    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "service", "logger", "message"}  # no span is active
    assert entry["level"] == "INFO"
    assert entry["service"] == "feature"
    assert entry["logger"] == "om.test"
    assert entry["message"] == "hello world"
    ts = datetime.fromisoformat(entry["ts"])
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert re.search(r"T\d\d:\d\d:\d\d\.\d{3}\+00:00$", entry["ts"])  # milliseconds, UTC


def test_an_active_span_adds_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")  # a local provider; the global one stays untouched
    with tracer.start_as_current_span("work") as span:
        entry = json.loads(JsonFormatter("feature").format(log_record()))
        ctx = span.get_span_context()

    assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])
    assert entry["trace_id"] == format(ctx.trace_id, "032x")
    assert entry["span_id"] == format(ctx.span_id, "016x")

    after = json.loads(JsonFormatter("feature").format(log_record()))
    assert "trace_id" not in after and "span_id" not in after


def test_an_error_carries_its_traceback() -> None:
    try:
        raise ValueError("kaput")
    except ValueError:
        record = logging.LogRecord("om.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    entry = json.loads(JsonFormatter("feature").format(record))
    assert entry["level"] == "ERROR"
    assert entry["message"] == "failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: kaput")


def test_odd_messages_still_make_valid_json() -> None:
    record = log_record('quote " newline \n unicode ✓ %r', (object(),))
    entry = json.loads(JsonFormatter("feature").format(record))
    assert entry["message"].startswith('quote " newline \n unicode ✓ <object object at')


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """Restore the root logger (pytest's capture handlers included) and the quietened loggers afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("aiokafka", "uvicorn.access", "httpx")}
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in noisy.items():
            logging.getLogger(name).setLevel(was)


def test_setup_logging_installs_one_json_handler(root_logger: logging.Logger) -> None:
    setup_logging("feature", "debug")

    [handler] = root_logger.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    assert handler.formatter.service == "feature"
    assert root_logger.level == logging.DEBUG
    assert logging.getLogger("aiokafka").level == logging.WARNING
    assert logging.getLogger("httpx").level == logging.WARNING


# --- setup_tracing ----------------------------------------------------------------------------------


class RecordingExporter(SpanExporter):
    instances: list[RecordingExporter] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.spans: list[ReadableSpan] = []
        RecordingExporter.instances.append(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def tracing(monkeypatch: pytest.MonkeyPatch) -> list[TracerProvider]:
    """A clean OTEL_* environment; OTLP export recorded in memory; the global provider left alone.

    Returns the providers setup_tracing tried to make global."""
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    RecordingExporter.instances = []
    monkeypatch.setattr(otlp_http, "OTLPSpanExporter", RecordingExporter)
    made_global: list[TracerProvider] = []
    monkeypatch.setattr(trace, "set_tracer_provider", made_global.append)
    return made_global


def finish(provider: TracerProvider) -> None:
    provider.get_tracer("test").start_span("probe").end()
    provider.shutdown()  # flushes and stops the exporter threads


def test_no_exporter_by_default(tracing: list[TracerProvider], capsys: pytest.CaptureFixture[str]) -> None:
    provider = setup_tracing("feature")

    assert isinstance(provider, TracerProvider)
    assert tracing == [provider]
    assert provider.resource.attributes[SERVICE_NAME] == "feature"
    finish(provider)
    assert RecordingExporter.instances == []
    assert "probe" not in capsys.readouterr().err


def test_none_exports_nothing_even_with_an_endpoint(
    tracing: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    finish(setup_tracing("feature"))
    assert RecordingExporter.instances == []


def test_service_name_comes_from_otel_service_name(
    tracing: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "feature-blue")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = setup_tracing("feature")
    assert provider.resource.attributes[SERVICE_NAME] == "feature-blue"
    provider.shutdown()


def test_console_writes_spans_to_stderr(
    tracing: list[TracerProvider], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "feature-green")
    provider = setup_tracing("feature")

    assert provider.resource.attributes[SERVICE_NAME] == "feature-green"
    finish(provider)
    captured = capsys.readouterr()
    assert '"name": "probe"' in captured.err
    assert "feature-green" in captured.err
    assert captured.out == ""  # stdout stays clean
    assert RecordingExporter.instances == []


def test_otlp_is_the_default_when_an_endpoint_is_set(
    tracing: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    finish(setup_tracing("feature"))

    [exporter] = RecordingExporter.instances
    assert [span.name for span in exporter.spans] == ["probe"]


def test_several_exporters_at_once(
    tracing: list[TracerProvider], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp, console")
    finish(setup_tracing("feature"))

    [exporter] = RecordingExporter.instances
    assert [span.name for span in exporter.spans] == ["probe"]
    assert '"name": "probe"' in capsys.readouterr().err
