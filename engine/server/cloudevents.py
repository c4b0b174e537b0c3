"""CloudEvents 1.0 over HTTP: binary, structured and batch mode, parsed into `CloudEvent` values.

    binary      ce-* headers carry the attributes, the body is the data (typed by Content-Type)
    structured  Content-Type application/cloudevents+json, one JSON object
    batch       Content-Type application/cloudevents-batch+json, a JSON array of such objects

Everything that is wrong raises `EventFormatError` with a code and a message saying where.
`json_loads_bounded` is the JSON parser both this module and the webhook ingest use: it refuses
documents nested deeper than `max_depth` before the stdlib parser (which recurses) sees them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.errors import ExecutionError

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "type")
OPTIONAL = ("subject", "time", "datacontenttype", "dataschema")
_CONTEXT = frozenset(("specversion", *REQUIRED, *OPTIONAL, "data", "data_base64"))

# A JSON string, or an unterminated one running to the end of the body. It can always match
# once it has started, so the regex never backtracks into quadratic time on hostile input.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENERS = frozenset(b"[{")


class EventFormatError(ExecutionError):
    """A request did not hold valid CloudEvents (or valid JSON).

    `code` is one of `malformed_json`, `too_deep`, `missing_attribute`, `invalid_event`,
    `unsupported_specversion` or `unsupported_media_type`; `message` says where. JSON syntax
    errors also carry `line` and `col`.
    """

    def __init__(
        self, code: str, message: str, *, line: int | None = None, col: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.line = line
        self.col = col


@dataclass(frozen=True)
class CloudEvent:
    """One CloudEvent as received; attribute values are kept as the sender wrote them."""

    id: str
    """Unique per source; with `source` it identifies the event (deduplication key)."""
    type: str
    """What happened, e.g. "com.example.order.created"."""
    source: str
    """URI-reference of the producer context."""
    specversion: str
    """Always "1.0" (anything else is refused)."""
    data: Any = None
    """Parsed JSON for JSON content types, str for text/*, bytes otherwise; None if absent."""
    subject: str | None = None
    """The subject of the event within the source."""
    time: str | None = None
    """RFC 3339 timestamp as sent (not parsed)."""
    datacontenttype: str | None = None
    """Media type of `data` (the Content-Type header in binary mode)."""
    extensions: dict[str, Any] = field(default_factory=dict)
    """Every other attribute, by its lower-case name."""
    dataschema: str | None = None
    """URI of the schema `data` adheres to."""


def parse_http(headers: Mapping[str, str], body: bytes, *, max_depth: int = 64) -> list[CloudEvent]:
    """Parse an HTTP request into its CloudEvents (one, or several in batch mode).

    The mode follows the Content-Type: application/cloudevents+json is structured,
    application/cloudevents-batch+json is a batch, anything else with ce-* headers is binary.
    Header names match case-insensitively. Raises `EventFormatError`.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    mode = event_mode(lowered)
    if mode == "structured":
        document = json_loads_bounded(body, max_depth, where="structured event")
        return [_from_json(document, "structured event")]
    if mode == "batch":
        return _parse_batch(json_loads_bounded(body, max_depth, where="batch"))
    return [_from_binary(lowered, body, max_depth)]


def event_mode(lowered: Mapping[str, str]) -> str:
    """"structured", "batch" or "binary", from the (lower-cased) headers alone, so a request no
    mode accepts is refused before its body is read. Raises `EventFormatError`."""
    media = _media_type(lowered.get("content-type"))
    if media == STRUCTURED:
        return "structured"
    if media == BATCH:
        return "batch"
    if media is not None and media.startswith("application/cloudevents"):
        raise EventFormatError("unsupported_media_type", f"event format {media!r} is not supported")
    if any(name.startswith("ce-") for name in lowered):
        return "binary"
    raise EventFormatError(
        "unsupported_media_type",
        f"expected {STRUCTURED}, {BATCH} or binary-mode ce-* headers, got {media or 'no type'}",
    )


def json_loads_bounded(body: bytes, max_depth: int, *, where: str = "body") -> Any:
    """Parse UTF-8 JSON whose arrays and objects nest at most `max_depth` levels.

    The depth is checked with a linear byte scan first, so hostile input never reaches the
    recursive stdlib parser. NaN and Infinity are refused. Raises `EventFormatError` with
    code `too_deep` or `malformed_json` (the latter with `line`/`col` for syntax errors).
    """
    check_json_depth(body, max_depth, where)
    if _LONG_DIGITS not in body.translate(_DIGIT_MASK):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard parser decides, and says where and why
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EventFormatError("malformed_json", f"{where}: not UTF-8 at byte {exc.start}") from exc
    try:
        value = _DECODER.decode(text)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot encode
        return value
    except UnicodeEncodeError as exc:
        raise EventFormatError("malformed_json", f"{where}: a string holds a lone surrogate "
                               "(\\ud800-\\udfff without its pair), which is not Unicode text"
                               ) from exc
    except json.JSONDecodeError as exc:
        message = f"{where}: line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise EventFormatError("malformed_json", message, line=exc.lineno, col=exc.colno) from exc
    except RecursionError as exc:  # only reachable with a max_depth near the recursion limit
        raise EventFormatError("too_deep", f"{where}: JSON nests too deeply") from exc
    except ValueError as exc:  # NaN/Infinity, integers past sys.get_int_max_str_digits()
        raise EventFormatError("malformed_json", f"{where}: {exc}") from exc


def check_json_depth(body: bytes, max_depth: int, where: str = "body") -> None:
    """Raise `too_deep` if brackets outside JSON strings nest deeper than `max_depth`."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return  # even counting those inside strings, too few to nest that deep
    brackets = _outside_strings(body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= max_depth:
        return  # cannot nest deeper than the number of containers
    depth = 0
    for byte in brackets:
        depth += 1 if byte in _OPENERS else -1
        if depth > max_depth:
            raise EventFormatError(
                "too_deep", f"{where}: JSON nests deeper than {max_depth} levels"
            )


def _outside_strings(body: bytes) -> bytes:
    """The body with its JSON strings cut out (an unterminated one runs to the end)."""
    if b"\\" not in body:  # no escapes, so quotes pair up: a C-speed split is enough
        return b"".join(body.split(b'"')[::2])
    return _JSON_STRING.sub(b"", body)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:24]} is beyond the range of a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant,   # built once: hot path
                            parse_float=_finite_float)
# orjson parses what the standard parser does, to equal values, several times faster; but it
# reads integers past 64 bits as floats, and leaves a BOM, lone surrogates and errors (with their
# messages) to the standard parser. A body with a run of 19 digits goes to the standard parser
# (found by masking every digit to "0" and everything else to " ": a regex costs 10x more).
_DIGIT_MASK = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGITS = b"0" * 19


def _media_type(content_type: str | None) -> str | None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media or None


def _is_json(media: str | None) -> bool:
    return media is None or media == "application/json" or media.endswith("+json")


# --- structured and batch mode -------------------------------------------------------------


def _parse_batch(document: Any) -> list[CloudEvent]:
    if not isinstance(document, list):
        raise EventFormatError(
            "invalid_event", f"batch: expected a JSON array, got {_kind(document)}"
        )
    return [_from_json(item, f"batch[{index}]") for index, item in enumerate(document)]


def _from_json(document: Any, where: str) -> CloudEvent:
    if not isinstance(document, dict):
        raise EventFormatError(
            "invalid_event", f"{where}: expected a JSON object, got {_kind(document)}"
        )
    attributes = {name: value for name, value in document.items() if value is not None}
    _check_context(attributes, where, "attribute '{}'")
    return _build(attributes, _structured_data(attributes, where))


def _structured_data(attributes: dict[str, Any], where: str) -> Any:
    if "data_base64" not in attributes:
        return attributes.get("data")
    if "data" in attributes:
        raise EventFormatError("invalid_event", f"{where}: has both 'data' and 'data_base64'")
    encoded = attributes["data_base64"]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        message = f"{where}: attribute 'data_base64' is not base64"
        raise EventFormatError("invalid_event", message) from exc


# --- binary mode ---------------------------------------------------------------------------


def _from_binary(headers: dict[str, str], body: bytes, max_depth: int) -> CloudEvent:
    attributes: dict[str, Any] = {
        name[3:]: _unescape_header(name, value)
        for name, value in headers.items()
        if name.startswith("ce-")
    }
    content_type = headers.get("content-type") or attributes.get("datacontenttype")
    attributes["datacontenttype"] = content_type
    _check_context(attributes, "binary event", "header 'ce-{}'")
    return _build(attributes, _binary_data(content_type, body, max_depth))


def _unescape_header(name: str, value: str) -> str:
    # HTTP binding 3.1.3.2: undo an RFC 7230 quoted-string, then one round of percent-decoding.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        message = f"binary event: header {name!r} is not percent-encoded UTF-8"
        raise EventFormatError("invalid_event", message) from exc


def _binary_data(content_type: str | None, body: bytes, max_depth: int) -> Any:
    """The body as data: JSON if typed JSON (or untyped, as the SDKs send it), text, or bytes."""
    if not body:
        return None
    media = _media_type(content_type)
    if _is_json(media):
        return json_loads_bounded(body, max_depth, where="binary event data")
    if media is not None and media.startswith("text/"):
        charset = _charset(content_type) or "utf-8"
        try:
            return body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            return body  # undecodable text stays as the bytes that were sent
    return body


def _charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"')
    return None


# --- attributes ----------------------------------------------------------------------------


def _check_context(attributes: dict[str, Any], where: str, label: str) -> None:
    """Check specversion, the required attributes and the types of the optional ones."""
    version = attributes.get("specversion")
    if version is None:
        raise EventFormatError(
            "missing_attribute", f"{where}: missing required {label.format('specversion')}"
        )
    if version != SPECVERSION:
        raise EventFormatError(
            "unsupported_specversion",
            f"{where}: {label.format('specversion')} is {version!r}; only {SPECVERSION!r} is "
            "supported",
        )
    for name in REQUIRED:
        if attributes.get(name) in (None, ""):
            raise EventFormatError(
                "missing_attribute", f"{where}: missing required {label.format(name)}"
            )
    for name in (*REQUIRED, *OPTIONAL):
        value = attributes.get(name)
        if value is not None and not isinstance(value, str):
            raise EventFormatError(
                "invalid_event",
                f"{where}: {label.format(name)} must be a string, got {_kind(value)}",
            )


def _build(attributes: dict[str, Any], data: Any) -> CloudEvent:
    return CloudEvent(
        id=attributes["id"],
        type=attributes["type"],
        source=attributes["source"],
        specversion=attributes["specversion"],
        data=data,
        subject=attributes.get("subject"),
        time=attributes.get("time"),
        datacontenttype=attributes.get("datacontenttype"),
        dataschema=attributes.get("dataschema"),
        extensions={k: v for k, v in attributes.items() if k not in _CONTEXT and v is not None},
    )


def _kind(value: Any) -> str:
    """A value's JSON type name, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
