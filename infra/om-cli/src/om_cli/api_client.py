"""The one HTTP client factory for calls to the public API and to ingest from the benchmark and the fault suite.

Credentials for public-API callers land here in one line (`headers=auth_headers()`), not in every caller."""

from __future__ import annotations

from typing import Any

import httpx


def api_client(base_url: str, *, timeout: float = 30.0, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, **kwargs)
