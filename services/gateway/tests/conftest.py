"""The gateway fixture: a gateway over real PostgreSQL, Redis and Kafka with in-process upstreams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from om_gateway.testing import gateway_settings, running_gateway


@pytest.fixture
async def gateway(infra_env: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_gateway(gateway_settings(infra_env, tmp_path)) as running:
        yield running
