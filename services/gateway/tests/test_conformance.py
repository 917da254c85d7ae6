"""schemathesis against the gateway's OpenAPI document, with the admin credential: every operation with a
bounded number of generated requests, then stateful sequences following the links from create-market to the
operations that take a market id. No 5xx, and every answer conforms to the document (status, content type,
schema, headers). The gateway runs on uvicorn with the real ingest in process; prediction and analytics are
the small in-process apps of their agreed internal APIs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from om_cli.testing import app_client
from om_gateway.app import create_app
from om_gateway.testing import ADMIN_KEY, gateway_settings, serving, stub_analytics, stub_prediction
from om_ingest.app import create_app as create_ingest
from om_ingest.settings import IngestSettings

pytestmark = pytest.mark.integration
EXAMPLES = 5
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)


def check_every_operation(base_url: str, openapi: dict[str, Any]) -> list[str]:
    """Every check but one: a schema-valid request may still break a rule JSON Schema cannot state (a market
    closing before it opens, a trade on an unknown market) and get its documented 422/404/409."""
    schema = schemathesis.openapi.from_dict(openapi)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @SETTINGS
        @hypothesis.given(case=operation.as_strategy())
        def run(case: Any) -> None:
            # On the case itself, so the ignored-auth check can take it away and expect a 401.
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {ADMIN_KEY}"}
            case.call_and_validate(base_url=base_url, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, report them together
            inner = getattr(exc, "exceptions", None) or [exc]
            failures.append(f"{operation.label}: {'; '.join(str(e) for e in inner)}"[:1500])
    return failures


def check_stateful(base_url: str, openapi: dict[str, Any]) -> None:
    machine = schemathesis.openapi.from_dict(openapi).as_state_machine()

    class Links(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "headers": {"Authorization": f"Bearer {ADMIN_KEY}"}}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            # Authentication is probed per operation above; here the credential is the session's, not the case's.
            case.validate_response(
                response, excluded_checks=[ignored_auth, positive_data_acceptance], transport_kwargs=kwargs
            )

    Links.run(
        settings=hypothesis.settings(
            SETTINGS, max_examples=6, stateful_step_count=6, phases=[hypothesis.Phase.generate]
        )
    )


# The server runs in this process, so its own use of `random` shows up while Hypothesis draws examples.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_the_api_conforms_to_its_openapi_document(infra_env, tmp_path) -> None:
    ingest = create_ingest(IngestSettings(**infra_env))
    async with app_client(ingest):
        transports = {
            "ingest": httpx.ASGITransport(app=ingest),
            "prediction": httpx.ASGITransport(app=stub_prediction()),
            "analytics": httpx.ASGITransport(app=stub_analytics()),
        }
        # Every request is also sent without and with a wrong credential: lift the anonymous limit for that.
        limits = {"anonymous": "100000/minute", "admin": "100000/minute"}
        app = create_app(gateway_settings(infra_env, tmp_path, rate_limits=limits), transports=transports)
        async with serving(app) as address:
            base_url = f"http://{address}"
            openapi = app.openapi()
            failures = await asyncio.to_thread(check_every_operation, base_url, openapi)
            assert not failures, "\n\n".join(failures)
            await asyncio.to_thread(check_stateful, base_url, openapi)
