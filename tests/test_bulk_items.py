"""Bulk items given as dicts: every field but _type and the key is a parameter, kept as is."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aioprefactor import Client

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


async def test_a_type_field_in_a_dict_item_is_sent_as_a_parameter(
    prefactor_api: LocalPrefactor,
) -> None:
    """A 'type' key beside '_type' reaches the wire unchanged instead of being dropped."""
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        # The local API refuses unknown fields, which proves the field was sent.
        await client.bulk.execute(
            [
                {
                    "_type": "agent_instances/start",
                    "idempotency_key": "key-00000001",
                    "agent_instance_id": "missing",
                    "type": "kept",
                }
            ]
        )
    (request,) = prefactor_api.requests
    assert request.body is not None
    assert request.body["items"][0]["type"] == "kept"


async def test_type_is_not_accepted_in_place_of_underscore_type(
    prefactor_api: LocalPrefactor,
) -> None:
    """A dict item needs '_type'; a bare 'type' is refused before sending."""
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        with pytest.raises(ValueError, match=r"items\[0\]\._type"):
            await client.bulk.execute(
                [{"type": "agent_instances/start", "idempotency_key": "key-00000001"}]
            )
    assert prefactor_api.requests == []
