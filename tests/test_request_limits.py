"""The request size cap: an oversized body is refused before anything is sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aioprefactor import Client

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


async def test_oversized_span_payload_is_refused_before_sending(
    prefactor_api: LocalPrefactor,
) -> None:
    """A span payload over max_request_bytes raises ValueError and sends nothing."""
    async with Client(prefactor_api.url, prefactor_api.token, max_request_bytes=4096) as client:
        with pytest.raises(ValueError, match="max_request_bytes") as caught:
            await client.agent_spans.create("inst-1", "agent:llm", payload={"text": "x" * 5000})
    assert prefactor_api.requests == []
    assert prefactor_api.token not in str(caught.value)


async def test_body_at_the_limit_is_sent(prefactor_api: LocalPrefactor) -> None:
    """A body under the cap goes out as usual (here, to a 404 for an unknown instance)."""
    async with Client(prefactor_api.url, prefactor_api.token, max_request_bytes=4096) as client:
        with pytest.raises(Exception, match="404"):
            await client.agent_spans.create("inst-1", "agent:llm", payload={"text": "x" * 100})
    assert len(prefactor_api.requests) == 1


@pytest.mark.parametrize("limit", [0, 1023, -5])
def test_tiny_request_limit_is_a_value_error(limit: int) -> None:
    """A max_request_bytes under 1 KiB is refused at construction."""
    with pytest.raises(ValueError, match="max_request_bytes"):
        Client("http://127.0.0.1:1", "t", max_request_bytes=limit)
