"""Bytes in, typed Structs out: the encoder and the decoders.

Encoders and decoders are built once, at import, as msgspec recommends.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar

import msgspec

from aioprefactor._wire.errors import PrefactorResponseContractError
from aioprefactor._wire.models import (
    AgentInstance,
    AgentSpan,
    BulkOutput,
    Envelope,
    ErrorBody,
)

T = TypeVar("T")

_SNIPPET_CHARS: Final = 200
# Enough bytes to fill a snippet; the secret is scrubbed from all of them first.
_SNIPPET_WINDOW: Final = 4096

encode = msgspec.json.Encoder().encode

INSTANCE_DECODER: Final = msgspec.json.Decoder(Envelope[AgentInstance])
SPAN_DECODER: Final = msgspec.json.Decoder(Envelope[AgentSpan])


class _Ping(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    status: Literal["success"]
    details: dict[str, Any] | None = None


PING_DECODER: Final = msgspec.json.Decoder(_Ping)
_ERROR_DECODER: Final = msgspec.json.Decoder(ErrorBody)


class _BulkEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    outputs: dict[str, BulkOutput]


BULK_DECODER: Final = msgspec.json.Decoder(_BulkEnvelope)


def scrub(text: str, secret: str | None) -> str:
    """Remove ``secret`` from text that came from the server (a page may echo headers)."""
    return text.replace(secret, "[redacted]") if secret else text


def snippet(body: bytes, secret: str | None = None) -> str:
    """Return the start of a body, decoded leniently, secret removed, whitespace collapsed."""
    text = scrub(body[:_SNIPPET_WINDOW].decode("utf-8", "replace"), secret)
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


def decode(
    decoder: msgspec.json.Decoder[T],
    body: bytes,
    *,
    operation: str,
    status: int,
    secret: str | None = None,
) -> T:
    """Decode a success body, or raise a contract error naming the operation and field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        error = decode_error(body)
        if error is not None and error.status == "error":
            reason = f"HTTP {status} with an error body: {error.code}: {error.message}"
            message = scrub(reason, secret)
        else:
            message = scrub(f"unexpected response shape: {exc}", secret)
        raise PrefactorResponseContractError(
            message,
            status_code=status,
            body_snippet=snippet(body, secret),
            operation=operation,
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError itself for invalid UTF-8 inside a string.
        raise PrefactorResponseContractError(
            f"response is not valid JSON ({type(exc).__name__})",
            status_code=status,
            body_snippet=snippet(body, secret),
            operation=operation,
        ) from None


def decode_error(body: bytes) -> ErrorBody | None:
    """Decode an error body, or ``None`` when it is not one."""
    try:
        return _ERROR_DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
