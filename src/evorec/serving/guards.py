"""What the service refuses before an endpoint runs, and how every refusal reads.

- Bodies over the size limit: 413, on the declared ``Content-Length`` before a byte is read,
  or as soon as a streamed body passes the limit (:class:`LimitBody`, plain ASGI).
- JSON that Python's parser would let through: ``NaN``/``Infinity``, numbers beyond a
  double (``1e309``), duplicate keys, lone UTF-16 surrogates, non-UTF-8 bytes
  (:class:`StrictJSONRoute`): 422 naming where. A number with no fraction (``5.0``) is the
  integer it equals, as in JSON Schema.
- Non-JSON bodies (forms, text) on endpoints that take JSON: 415 (:func:`json_only`), so
  that no web page can post to the service with a plain form.
- 422 replies list at most :data:`MAX_ERRORS` errors as ``{loc, msg, type}``, never the
  input, every string clipped and made encodable.
"""

from __future__ import annotations

import email.message
import json
import math
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evorec.serving.schemas import BATCH, EVENT, MAX_BATCH

MAX_ERRORS = 20  # errors listed in a 422 reply
MAX_TEXT = 200  # characters of a message or a location part in a reply
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def invalid(
    loc: Sequence[str | int], msg: str, kind: str = "value_error"
) -> RequestValidationError:
    """A 422 naming ``loc`` (``body``, ``query``, ... then the field), in the reply shape of
    every other validation error."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": kind}])


def validation_reply(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """The 422 reply: where and what, for the first :data:`MAX_ERRORS` errors."""
    listed = [
        {"loc": _location(error["loc"]), "msg": _message(error), "type": _text(error["type"])}
        for error in errors[:MAX_ERRORS]
    ]
    return JSONResponse({"detail": listed, "errors": len(errors)}, status_code=422)


def _location(loc: Sequence[Any]) -> list[str | int]:
    parts = list(loc)
    # the tag of the one-event-or-a-list union of POST /events is no field
    if len(parts) > 1 and parts[0] == "body" and parts[1] in (EVENT, BATCH):
        del parts[1]
    return [p if isinstance(p, int) and not isinstance(p, bool) else _text(p) for p in parts]


def _message(error: Mapping[str, Any]) -> str:
    ctx = error.get("ctx") or {}
    if error["type"] == "too_long" and tuple(error["loc"]) == ("body", BATCH):
        length = ctx.get("actual_length")
        this_one = f", this one {length:,}" if isinstance(length, int) else ""
        return f"a batch holds at most {MAX_BATCH:,} events{this_one}: post it in several requests"
    if error["type"] == "json_invalid" and "error" in ctx:  # FastAPI's own JSON errors
        return _text(f"invalid JSON: {ctx['error']}")
    return _text(error["msg"])


def _text(value: object) -> str:
    text = str(value)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- strict JSON --------------------------------------------------------------------------


class _Refused:
    """Put in the parsed tree where a value was refused, found with its path afterwards."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Duplicated(dict):  # type: ignore[type-arg]
    """An object that named a key twice."""

    duplicate: str


def parse_json(body: bytes) -> Any:
    """``body`` as strict JSON; :class:`RequestValidationError` naming where it is not."""
    refused = False

    def constant(name: str) -> _Refused:
        nonlocal refused
        refused = True
        return _Refused(f"{name} is not a number in JSON")

    def number(text: str) -> int | float | _Refused:
        nonlocal refused
        value = float(text)
        if math.isfinite(value):
            # 5.0 and 5e0 are the integer 5, as JSON Schema (and so the spec) reads them
            return int(value) if value.is_integer() else value
        refused = True
        return _Refused(f"{_text(text)} is beyond the range of a 64-bit float")

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal refused
        mapping = dict(pairs)
        if len(mapping) == len(pairs):
            return mapping
        refused = True
        duplicated = _Duplicated(mapping)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                duplicated.duplicate = key
                break
            seen.add(key)
        return duplicated

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(
            ["body"], f"the body is not UTF-8 (byte {exc.start})", "json_invalid"
        ) from None
    decoder = json.JSONDecoder(
        parse_constant=constant, parse_float=number, object_pairs_hook=members
    )
    try:
        value = decoder.decode(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise invalid(["body"], f"invalid JSON: {exc.msg} at {where}", "json_invalid") from None
    except ValueError:  # an integer beyond Python's digit limit
        raise invalid(
            ["body"], "invalid JSON: a number with too many digits", "json_invalid"
        ) from None
    except RecursionError:
        raise invalid(["body"], "invalid JSON: nested too deeply", "json_invalid") from None
    if refused or _SURROGATE_ESCAPE.search(body):
        _refuse_marked(value)
    return value


def _not_json(message: str) -> RequestValidationError:
    return invalid(["body"], message, "json_invalid")


def _refuse_marked(value: Any) -> None:
    """Raise for the first refused value, duplicate key or lone surrogate, with its path."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [(("body",), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Refused):
            raise invalid(path, node.message, "json_invalid")
        if isinstance(node, str):
            if _lone_surrogate(node):
                raise invalid(path, "a string holds a lone UTF-16 surrogate", "json_invalid")
        elif isinstance(node, dict):
            if isinstance(node, _Duplicated):
                raise invalid(path, f"duplicate key {node.duplicate[:64]!r}", "json_invalid")
            for key, child in node.items():
                if _lone_surrogate(key):
                    raise invalid(path, "a key holds a lone UTF-16 surrogate", "json_invalid")
                stack.append(((*path, key), child))
        elif isinstance(node, list):
            stack.extend(((*path, n), child) for n, child in enumerate(node))


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, as FastAPI reads JSON."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class StrictJSONRequest(Request):
    """A request whose JSON body is parsed by :func:`parse_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route that parses its JSON body strictly before FastAPI validates it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            if takes_body and is_json(request.headers.get("content-type")) and await request.body():
                await request.json()  # refused here as a 422; FastAPI reads the parsed value
            return await handler(request)

        return strict


def json_only(request: Request) -> None:
    """415 for a body, or a declared content type, other than JSON."""
    headers = request.headers
    content_type = headers.get("content-type")
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if (content_type is not None or has_body) and not is_json(content_type):
        raise HTTPException(
            415,
            "send the body as JSON, content-type: application/json (no forms, no text)",
        )


# -- body size ----------------------------------------------------------------------------


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes")


class LimitBody:
    """413 for a request body over ``limit`` bytes, without reading it into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)  # answered by the app's HTTP error handler
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(self.limit)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": BodyTooLarge(limit).detail}, status_code=413)
