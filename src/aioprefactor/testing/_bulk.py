"""`POST /api/v1/bulk`: many operations in one request, in order, stopping at the first error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aioprefactor.testing import _routes as routes
from aioprefactor.testing._errors import error_body
from aioprefactor.testing._operations import Operations, Reply
from aioprefactor.testing._validate import BLANK, MAX_KEY_LENGTH, Fields

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

MIN_KEY_LENGTH = 8

# item type -> (route, the item field that stands for the resource id in the route's path)
ITEM_TYPES: dict[str, tuple[str, str | None]] = {
    "agent_instances/register": (routes.REGISTER, None),
    "agent_instances/start": (routes.START, "agent_instance_id"),
    "agent_instances/finish": (routes.FINISH, "agent_instance_id"),
    "agent_spans/create": (routes.SPAN_CREATE, None),
    "agent_spans/finish": (routes.SPAN_FINISH, "agent_span_id"),
}


def _check_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Check the request as a whole; raise the 422 `ApiError` if it cannot be processed."""
    fields = Fields(body)
    fields.only({"items"})
    items = body.get("items")
    if not isinstance(items, list):
        fields.add("items", BLANK if items is None else "must be a list")
        items = []
    elif not items:
        fields.add("items", "should have at least 1 item(s)")
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"items.{index}."
        if not isinstance(item, dict):
            fields.add(f"items.{index}", "must be an object")
            continue
        if item.get("_type") not in ITEM_TYPES:
            fields.add(where + "_type", f"must be one of: {', '.join(ITEM_TYPES)}")
        key = item.get("idempotency_key")
        if not isinstance(key, str) or not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
            message = f"must be a string of {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters"
            fields.add(where + "idempotency_key", message)
        elif key in seen:
            fields.add(where + "idempotency_key", "must be unique within the request")
        else:
            seen.add(key)
    fields.check()
    return items


def run_bulk(
    operations: Operations, body: Mapping[str, Any], allowed: Collection[str] | None = None
) -> Reply:
    """Run every item of a bulk request; raise `ApiError` (422) if the request is malformed.

    An item of a type outside `allowed` (when given) is answered `unsupported_type`, as a
    server whose bulk takes fewer types would, and the items after it are not run.
    """
    outputs: dict[str, dict[str, Any]] = {}
    for item in _check_items(body):
        if allowed is not None and item["_type"] not in allowed:
            message = f"bulk does not take {item['_type']!r} items"
            outputs[item["idempotency_key"]] = error_body(422, message, code="unsupported_type")
            break
        route, id_field = ITEM_TYPES[item["_type"]]
        params = {name: value for name, value in item.items() if name not in {"_type", id_field}}
        resource_id = "" if id_field is None else item.get(id_field)
        if not isinstance(resource_id, str) or (id_field is not None and not resource_id):
            message = BLANK if resource_id in (None, "") else "must be a string"
            assert id_field is not None
            output = error_body(422, "the request body is invalid", errors={id_field: [message]})
            status = 422
        else:
            (status, output), _ = operations.run(route, resource_id, params)
        outputs[item["idempotency_key"]] = output
        if status >= 400:
            break
    return Reply(200, {"status": "success", "outputs": outputs})
