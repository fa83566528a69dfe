"""Text the server sends back never carries the token into an error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aioprefactor import Client, PrefactorValidationError

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


async def test_token_in_an_error_code_is_scrubbed(prefactor_api: LocalPrefactor) -> None:
    """An error body echoing the token in its code and message shows '[redacted]' instead."""
    token = prefactor_api.token
    body = {"status": "error", "code": f"bad-{token}", "message": f"token {token} refused"}
    prefactor_api.faults.fail_next(1, 422, body=body, route="ping")
    async with Client(prefactor_api.url, token) as client:
        with pytest.raises(PrefactorValidationError) as caught:
            await client.ping()
    assert token not in str(caught.value)
    assert token not in caught.value.code
    assert "[redacted]" in caught.value.code
