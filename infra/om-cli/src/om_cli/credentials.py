"""Credentials for the public API. `om up` creates a development admin API key, saves it in
`<data-dir>/credentials/admin-api-key` (mode 0600) and names that file to the gateway
(`GATEWAY_ADMIN_API_KEY_FILE`); every client of the public API sends `auth_headers()`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The environment variable that names the gateway's bootstrap admin key file.
GATEWAY_KEY_FILE_ENV = "GATEWAY_ADMIN_API_KEY_FILE"
#: An explicit key for clients (takes precedence over the file).
API_KEY_ENV = "OM_API_KEY"


def default_data_dir() -> Path:
    return Path(os.environ.get("OM_DATA_DIR", ".om"))


def admin_key_file(data_dir: Path | None = None) -> Path:
    return (data_dir or default_data_dir()) / "credentials" / "admin-api-key"


def ensure_admin_key(data_dir: Path | None = None) -> tuple[Path, str]:
    """The development admin key (created, readable by the owner only, if there is none yet) and its file."""
    path = admin_key_file(data_dir)
    if path.exists() and (key := path.read_text().strip()):
        return path, key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = f"om-dev-admin-{secrets.token_urlsafe(24)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return path, key


def auth_headers(api_key: str | None = None, data_dir: Path | None = None) -> dict[str, str]:
    """`Authorization` for the public API: the explicit key, else `$OM_API_KEY`, else the saved admin key; no
    header if there is none (the gateway then answers 401, saying what to send)."""
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key:
        path = admin_key_file(data_dir)
        key = path.read_text().strip() if path.exists() else None
    return {"authorization": f"Bearer {key}"} if key else {}
