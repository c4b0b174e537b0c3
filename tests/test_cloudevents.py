"""CloudEvents HTTP binding: events from the cloudevents SDK parse, broken requests say where."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent as SdkEvent
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from engine.errors import ExecutionError
from engine.server.cloudevents import (
    BATCH,
    STRUCTURED,
    CloudEvent,
    EventFormatError,
    json_loads_bounded,
    parse_http,
)

ATTRIBUTES = {
    "id": "evt-1",
    "type": "com.example.order.created",
    "source": "/shop/orders",
    "subject": "order/42",
    "time": "2024-05-01T12:00:00Z",
    "tenant": "acme",
}
ORDER = {"order": 42, "lines": [{"sku": "A-1", "qty": 2}], "note": "brackets [ { in text"}


def sdk_event(data: Any = ORDER, **attributes: str) -> SdkEvent:
    return SdkEvent({**ATTRIBUTES, **attributes}, data)


def one(headers: Any, body: bytes | None, **kwargs: Any) -> CloudEvent:
    events = parse_http(headers, body or b"", **kwargs)
    assert len(events) == 1
    return events[0]


def refuse(headers: dict[str, str], body: bytes, **kwargs: Any) -> EventFormatError:
    with pytest.raises(EventFormatError) as info:
        parse_http(headers, body, **kwargs)
    assert str(info.value) == f"{info.value.code}: {info.value.message}"
    return info.value


def structured(*documents: Any, batch: bool = False) -> tuple[dict[str, str], bytes]:
    body = json.dumps(list(documents) if batch else documents[0]).encode()
    return {"Content-Type": BATCH if batch else STRUCTURED}, body


def minimal(**changes: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "e1", "source": "/s", "type": "t", **changes}
    return {k: v for k, v in event.items() if v is not ...}


# --- events from the SDK ---------------------------------------------------------------------


def test_sdk_binary_mode_with_json_data() -> None:
    headers, body = to_binary(sdk_event(datacontenttype="application/json"))
    assert one(headers, body) == CloudEvent(
        id="evt-1",
        type="com.example.order.created",
        source="/shop/orders",
        specversion="1.0",
        data=ORDER,
        subject="order/42",
        time="2024-05-01T12:00:00Z",
        datacontenttype="application/json",
        extensions={"tenant": "acme"},
    )


def test_sdk_binary_mode_without_content_type_is_json() -> None:
    headers, body = to_binary(sdk_event())
    assert "content-type" not in headers
    event = one(headers, body)
    assert event.data == ORDER
    assert event.datacontenttype is None


def test_sdk_structured_mode_with_json_data() -> None:
    headers, body = to_structured(sdk_event())
    event = one(headers, body)
    assert (event.id, event.source, event.type, event.subject) == (
        "evt-1",
        "/shop/orders",
        "com.example.order.created",
        "order/42",
    )
    assert event.data == ORDER
    assert event.extensions == {"tenant": "acme"}


def test_sdk_binary_data_stays_bytes() -> None:
    payload = b"\x00\xffPDF-1.7"
    headers, body = to_binary(sdk_event(payload, datacontenttype="application/octet-stream"))
    event = one(headers, body)
    assert event.data == payload
    assert event.datacontenttype == "application/octet-stream"


def test_sdk_structured_data_base64_becomes_bytes() -> None:
    payload = b"\x00\xffPDF-1.7"
    headers, body = to_structured(sdk_event(payload, datacontenttype="application/pdf"))
    assert b'"data_base64"' in body
    assert one(headers, body).data == payload


def test_sdk_event_without_data() -> None:
    headers, body = to_binary(sdk_event(None))
    assert one(headers, body).data is None
    headers, body = to_structured(sdk_event(None))
    assert one(headers, body).data is None


def test_binary_text_data_is_decoded_with_its_charset() -> None:
    headers = {**minimal_headers(), "Content-Type": "text/plain; charset=iso-8859-1"}
    assert one(headers, "grüße".encode("iso-8859-1")).data == "grüße"
    headers["Content-Type"] = "text/csv"
    assert one(headers, "a,b\n1,ü".encode()).data == "a,b\n1,ü"


def test_binary_json_suffix_types_are_parsed() -> None:
    headers = {**minimal_headers(), "Content-Type": "application/vnd.acme.order+json"}
    assert one(headers, b'{"a": [1]}').data == {"a": [1]}


def test_binary_header_values_are_percent_and_quote_decoded() -> None:
    headers = {
        **minimal_headers(),
        "ce-source": "/shop/caf%C3%A9%20orders",
        "ce-subject": '"quoted \\"subject\\""',
        "Content-Type": "application/octet-stream",
    }
    event = one(headers, b"x")
    assert event.source == "/shop/café orders"
    assert event.subject == 'quoted "subject"'


def test_header_names_are_case_insensitive_and_starlette_headers_work() -> None:
    headers, body = to_binary(sdk_event(datacontenttype="application/json"))
    upper = {name.upper(): value for name, value in headers.items()}
    assert one(upper, body) == one(Headers(headers=headers), body) == one(headers, body)
    assert one(upper, body).extensions == {"tenant": "acme"}


def test_structured_content_type_parameters_are_ignored() -> None:
    headers, body = to_structured(sdk_event())
    headers["content-type"] = "Application/CloudEvents+JSON; charset=utf-8"
    assert one(headers, body).id == "evt-1"


def test_batch_of_three() -> None:
    documents = [json.loads(to_structured(sdk_event(id=f"evt-{n}"))[1]) for n in range(2)]
    documents.append(minimal(id="evt-2", data_base64="AP8=", datacontenttype="image/png"))
    events = parse_http(*structured(*documents, batch=True))
    assert [e.id for e in events] == ["evt-0", "evt-1", "evt-2"]
    assert [e.data for e in events] == [ORDER, ORDER, b"\x00\xff"]
    assert events[2].datacontenttype == "image/png"


def test_empty_batch_is_no_events() -> None:
    assert parse_http({"content-type": BATCH}, b"[]") == []


def test_null_attributes_count_as_absent() -> None:
    event = one(*structured(minimal(subject=None, tenant=None, data=None)))
    assert (event.subject, event.extensions, event.data) == (None, {}, None)


def minimal_headers() -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/s", "ce-type": "t"}


# --- every error code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "message", "line", "col"),
    [
        (
            {"content-type": STRUCTURED},
            b'{\n  "id": ,\n}',
            "structured event: line 2 column 9: Expecting value",
            2,
            9,
        ),
        (
            {"content-type": BATCH},
            b'[{"id": "a"} {"id": "b"}]',
            "batch: line 1 column 14: Expecting ',' delimiter",
            1,
            14,
        ),
        (
            {**minimal_headers(), "content-type": "application/json"},
            b'{"unterminated": "[[[',
            "binary event data: line 1 column 18: Unterminated string starting at",
            1,
            18,
        ),
    ],
)
def test_malformed_json_says_where(
    headers: dict[str, str], body: bytes, message: str, line: int, col: int
) -> None:
    error = refuse(headers, body)
    assert error.code == "malformed_json"
    assert error.message == message
    assert (error.line, error.col) == (line, col)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "\xff"}', "structured event: not UTF-8 at byte 8"),
        (b'{"data": NaN}', "structured event: NaN is not valid JSON"),
        (b'{"data": -Infinity}', "structured event: -Infinity is not valid JSON"),
    ],
)
def test_non_json_values_are_malformed(body: bytes, message: str) -> None:
    error = refuse({"content-type": STRUCTURED}, body)
    assert (error.code, error.message) == ("malformed_json", message)


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (*structured(minimal(source=...)), "structured event: missing required attribute 'source'"),
        (*structured(minimal(id="")), "structured event: missing required attribute 'id'"),
        (
            *structured(minimal(specversion=...)),
            "structured event: missing required attribute 'specversion'",
        ),
        (
            *structured(minimal(), minimal(), minimal(), minimal(source=...), batch=True),
            "batch[3]: missing required attribute 'source'",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "e1", "ce-type": "t"},
            b"{}",
            "binary event: missing required header 'ce-source'",
        ),
        ({"ce-id": "e1"}, b"", "binary event: missing required header 'ce-specversion'"),
    ],
)
def test_missing_attribute_names_it(headers: dict[str, str], body: bytes, message: str) -> None:
    error = refuse(headers, body)
    assert (error.code, error.message) == ("missing_attribute", message)


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (
            *structured(minimal(specversion="0.3")),
            "structured event: attribute 'specversion' is '0.3'; only '1.0' is supported",
        ),
        (
            *structured(minimal(specversion=1.0)),
            "structured event: attribute 'specversion' is 1.0; only '1.0' is supported",
        ),
        (
            {**minimal_headers(), "ce-specversion": "0.3"},
            b"",
            "binary event: header 'ce-specversion' is '0.3'; only '1.0' is supported",
        ),
    ],
)
def test_unsupported_specversion(headers: dict[str, str], body: bytes, message: str) -> None:
    error = refuse(headers, body)
    assert (error.code, error.message) == ("unsupported_specversion", message)


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("application/json", f"expected {STRUCTURED}, {BATCH} or binary-mode ce-* headers, got"),
        (None, "got no type"),
        ("application/cloudevents+avro", "event format 'application/cloudevents+avro' is not"),
    ],
)
def test_unsupported_media_type(content_type: str | None, message: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    error = refuse(headers, json.dumps(minimal()).encode())
    assert error.code == "unsupported_media_type"
    assert message in error.message


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        (
            *structured(minimal(), [minimal()], batch=True),
            "batch[1]: expected a JSON object, got array",
        ),
        (
            {"content-type": BATCH},
            json.dumps(minimal()).encode(),
            "batch: expected a JSON array, got object",
        ),
        (*structured("evt"), "structured event: expected a JSON object, got string"),
        (
            *structured(minimal(id=42)),
            "structured event: attribute 'id' must be a string, got number",
        ),
        (
            *structured(minimal(time={"at": 1})),
            "structured event: attribute 'time' must be a string, got object",
        ),
        (
            *structured(minimal(data={}, data_base64="AA==")),
            "structured event: has both 'data' and 'data_base64'",
        ),
        (
            *structured(minimal(data_base64="not base64!")),
            "structured event: attribute 'data_base64' is not base64",
        ),
        (
            {**minimal_headers(), "ce-source": "/%FF"},
            b"",
            "binary event: header 'ce-source' is not percent-encoded UTF-8",
        ),
    ],
)
def test_invalid_event(headers: dict[str, str], body: bytes, message: str) -> None:
    error = refuse(headers, body)
    assert (error.code, error.message) == ("invalid_event", message)


def test_event_format_error_is_an_execution_error() -> None:
    assert isinstance(refuse({}, b""), ExecutionError)


# --- nesting depth -----------------------------------------------------------------------------


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_100000_levels_are_refused_fast(opener: bytes) -> None:
    body = b'{"specversion": "1.0", "data": ' + opener * 100_000
    started = time.perf_counter()
    error = refuse({"content-type": STRUCTURED}, body)
    assert time.perf_counter() - started < 1.0
    assert (error.code, error.message) == (
        "too_deep",
        "structured event: JSON nests deeper than 64 levels",
    )


def test_depth_limit_is_inclusive() -> None:
    assert json_loads_bounded(b"[" * 5 + b"]" * 5, 5) == [[[[[]]]]]
    with pytest.raises(EventFormatError, match="too_deep: body: JSON nests deeper than 4 levels"):
        json_loads_bounded(b"[" * 5 + b"]" * 5, 4)


def test_binary_data_depth_is_checked() -> None:
    headers = {**minimal_headers(), "content-type": "application/json"}
    error = refuse(headers, b"[" * 11 + b"]" * 11, max_depth=10)
    assert (error.code, error.message) == (
        "too_deep",
        "binary event data: JSON nests deeper than 10 levels",
    )


@pytest.mark.parametrize("text", ['[[[{{ \\" ]]] \\\\', "[[[{{ ]]] no escapes"])
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    body = json.dumps({"a": [text] * 3, "b": "[" * 1000}).encode()
    assert json_loads_bounded(body, 2) == {"a": [text] * 3, "b": "[" * 1000}


@pytest.mark.parametrize("tail", [b"\\", b""])
def test_hostile_unterminated_strings_scan_in_linear_time(tail: bytes) -> None:
    body = b'"' + b'\\"[' * 300_000 + tail
    started = time.perf_counter()
    with pytest.raises(EventFormatError) as info:
        json_loads_bounded(body, 4)
    assert time.perf_counter() - started < 1.0
    assert info.value.code == "malformed_json"
    assert info.value.message.startswith("body: line 1 column 1: Unterminated string")


@pytest.mark.parametrize("body", [b'[[["abc[[[[[[', b'[[["a\\"bc[[[[[['])
def test_only_brackets_before_an_unterminated_string_count(body: bytes) -> None:
    with pytest.raises(EventFormatError, match="too_deep"):
        json_loads_bounded(body, 2)
    with pytest.raises(EventFormatError, match="malformed_json: body: line 1 column 4: Untermin"):
        json_loads_bounded(body, 3)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def depth_of(value: Any) -> int:
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    )
    if children is None:
        return 0
    return 1 + max((depth_of(child) for child in children), default=0)


@given(value=json_values, ascii_only=st.booleans())
def test_bounded_loads_agrees_with_json_and_measures_depth_exactly(
    value: Any, ascii_only: bool
) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    depth = depth_of(value)
    assert json_loads_bounded(body, depth) == value
    if depth:
        with pytest.raises(EventFormatError) as info:
            json_loads_bounded(body, depth - 1)
        assert info.value.code == "too_deep"


@pytest.mark.parametrize(
    "text", ["18446744073709551616", "-9223372036854775809", "123456789012345678901234567890"]
)
def test_integers_past_64_bits_stay_exact_integers(text: str) -> None:
    # The fast parser would read these as floats: an order number must not lose digits.
    value = json_loads_bounded(b'{"n": %s, "s": "x"}' % text.encode(), 4)["n"]
    assert type(value) is int and value == int(text)


def test_what_the_fast_parser_refuses_the_standard_one_reads() -> None:
    assert json_loads_bounded(b'\xef\xbb\xbf{"a": 1}', 4) == {"a": 1}


@pytest.mark.parametrize("body", [b'["\\ud800"]', b"[1e400]", b"[-1e400]"])
def test_what_no_store_could_hold_is_refused(body: bytes) -> None:
    # a lone surrogate cannot be encoded, an infinity is no JSON: such a run failed INTERNAL_ERROR
    with pytest.raises(EventFormatError, match="malformed_json"):
        json_loads_bounded(body, 4)
