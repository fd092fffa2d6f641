"""The handshake's URL (contract section 2); the link seen from the Cloud: tests/contract."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import pytest
from pydantic import SecretStr

from hublink.config import Settings
from hublink.credentials import Credentials
from hublink.link.handshake import ws_url


@pytest.mark.parametrize("token", ["plain-Token_0.9~", "a+b/c==&d#e f%"])
def test_ws_url_matches_the_contract_and_keeps_any_token_intact(token: str) -> None:
    hub_id = uuid4()
    creds = Credentials(
        hub_id=hub_id,
        slug="corner",
        tunnel_port=7001,
        tunnel_token=SecretStr(token),
        cloud_url="https://cloud.example:8443",
        registered_at="2026-01-01T00:00:00Z",
    )
    url = urlsplit(ws_url(Settings(cloud_url="https://cloud.example:8443/"), creds))
    assert (url.scheme, url.netloc, url.path) == ("wss", "cloud.example:8443", f"/ws/hub/{hub_id}/")
    # What the Cloud's query parser (Django's, aiohttp's) reads back is the token itself.
    assert parse_qs(url.query) == {"token": [token]}
