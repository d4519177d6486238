"""Turn request bodies into validated requests, or into errors with stable codes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, TypeVar

from flask import Request
from pydantic import BaseModel, ValidationError

from core.errors import InvalidField, MalformedRequest, VerifierError

M = TypeVar("M", bound=BaseModel)


def json_body(request: Request) -> dict[str, Any]:
    """Return the request's JSON object, or raise ``MalformedRequest``."""
    if not request.is_json:
        raise MalformedRequest("send a JSON body with Content-Type: application/json", code="unsupported_media_type")
    try:
        # Standard JSON only: Python's parser would accept NaN and Infinity.
        body = json.loads(request.get_data(cache=True), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the body is not valid JSON", code="malformed_json") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object", code="malformed_request")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validate(model: type[M], body: dict[str, Any]) -> M:
    """Validate ``body`` against ``model``; raise an error naming the first bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise translate(exc) from None


def translate(exc: ValidationError) -> VerifierError:
    """Return the API error for a pydantic validation failure."""
    err = exc.errors(include_url=False)[0]
    loc = [str(part) for part in err["loc"]]
    field = loc[0] if loc else ""
    where = ".".join(loc) or "body"
    message = f"{where}: {err['msg']}" if loc else err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return InvalidField(f"unknown field {where!r}", code="unknown_field", field=where)
    if err["type"] == "missing":
        return InvalidField(f"missing required field {where!r}", code="missing_field", field=where)
    if not field:
        return InvalidField(message, code="text_or_texts_required")
    return InvalidField(message.replace("Value error, ", ""), code=f"invalid_{field}", field=where)


def check_deadline(deadline: str | None) -> None:
    """Raise when ``deadline`` is not an RFC 3339 time with a zone."""
    if deadline is None:
        return
    try:
        parsed = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidField("deadline must be an RFC 3339 time", code="invalid_deadline") from None
    if parsed.tzinfo is None:
        raise InvalidField("deadline must carry a time zone (e.g. 'Z')", code="invalid_deadline")
