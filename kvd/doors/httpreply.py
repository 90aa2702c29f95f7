"""What every HTTP route answers with: a response, its JSON and its errors, sans-IO.

JSON carries a key or value that is not UTF-8 as `{"base64": ...}`; an error is
`{"error": {"code", "message", ...}}` with a fitting status.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

JSON = "application/json"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


def error_response(status: int, code: str, message: str,
                   headers: list[tuple[str, str]] | None = None,
                   details: dict | None = None) -> Response:
    """`details`: facts beside the message (a failed CAS's current revision), in the error."""
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error.update({str(k): jsonable(v) for k, v in details.items()})
    body = json.dumps({"error": error}).encode()
    return Response(status, body, JSON, list(headers or []))


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, json.dumps(value, separators=(",", ":")).encode() + b"\n")


def text_response(body: bytes, status: int = 200) -> Response:
    return Response(status, body, "text/plain; charset=utf-8")


def wire(value: bytes | None) -> object:
    """A key or value in JSON: text when it is UTF-8, else {"base64": ...}."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(value).decode()}


def unwire(value: object) -> bytes | None:
    """`wire`'s inverse for what a client sends: a string (as UTF-8) or {"base64": ...};
    None for anything else."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, dict) and isinstance(value.get("base64"), str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except ValueError:
            return None
    return None


def jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return wire(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
