"""The token is kept as a Secret everywhere a client holds it."""

from __future__ import annotations

from aioprefactor import Client
from aioprefactor._wire.config import Secret

TOKEN = "tok-very-secret-0123456789"


def test_token_is_not_a_plain_attribute_anywhere_in_the_client() -> None:
    """No attribute of the client, its transport or its settings holds the token as a str."""
    client = Client(api_url="https://api.example.com", api_token=TOKEN)
    seen: set[int] = set()
    found: list[str] = []

    def walk(obj: object, path: str, depth: int) -> None:
        if id(obj) in seen or depth > 4 or isinstance(obj, Secret):
            return
        seen.add(id(obj))
        if isinstance(obj, str):
            if TOKEN in obj:
                found.append(path)
            return
        if isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{path}[{key!r}]", depth + 1)
            return
        attrs = getattr(obj, "__dict__", None)
        names = list(attrs) if isinstance(attrs, dict) else []
        names += [n for n in getattr(type(obj), "__slots__", ()) if isinstance(n, str)]
        for name in names:
            if hasattr(obj, name):
                walk(getattr(obj, name), f"{path}.{name}", depth + 1)

    walk(client, "client", 0)
    assert [] == found
    assert TOKEN not in repr(client)
