"""A mapping's rules compiled into one generated function (engine.compiler.codegen)."""

from __future__ import annotations

import copy
from typing import Any

import jmespath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jmespath.visitor import Options

from engine.compiler.codegen import MISSING, FieldRule, compile_rules
from engine.compiler.jmespath_runtime import FUNCTIONS
from engine.errors import ExpressionSyntaxError, FieldProblem, MappingError

OPPORTUNITY = {
    "Id": "006A",
    "AccountId": "001A",
    "Account": {"Name": "Acme", "BillingCity": "Berlin", "BillingCountry": "DE"},
    "CurrencyIsoCode": None,
    "Term__c": "2",
    "Code": "00123",
    "Number": "123",
    "OpportunityLineItems": [
        {"ProductCode": "A-1", "Quantity": 2, "UnitPrice": 10.5},
        {"ProductCode": "B-2", "Quantity": 1, "UnitPrice": 99},
    ],
}


LINES = "OpportunityLineItems[].{sku: ProductCode, quantity: Quantity, unit_price: UnitPrice}"


def rule(target: str, kind: str, source: Any, **options: Any) -> FieldRule:
    return FieldRule(tuple(target.split(".")), kind, source, **options)


def problems_of(function: Any, data: Any) -> list[FieldProblem]:
    with pytest.raises(MappingError) as caught:
        function(data)
    return caught.value.problems


def test_a_whole_mapping() -> None:
    mapping = compile_rules(
        "opportunity-to-order",
        [
            rule("order_id", "expr", "Id", required=True),
            rule("customer.account_id", "expr", "AccountId"),
            rule("customer.name", "expr", "Account.Name"),
            rule("customer.bill_to.city", "expr", "Account.BillingCity"),
            rule("customer.bill_to.street", "expr", "Account.BillingStreet"),
            rule("currency", "expr", "CurrencyIsoCode", default="USD"),
            rule("lines", "expr", LINES),
            rule("region", "expr", "Account.BillingCountry", lookup={"US": "NA", "DE": "EMEA"}),
            rule("term_months", "template", "{{ source.Term__c | int * 12 }}"),
            rule("status", "const", "pending"),
        ],
    )
    assert mapping(OPPORTUNITY) == {
        "order_id": "006A",
        "customer": {"account_id": "001A", "name": "Acme", "bill_to": {"city": "Berlin"}},
        "currency": "USD",
        "lines": [
            {"sku": "A-1", "quantity": 2, "unit_price": 10.5},
            {"sku": "B-2", "quantity": 1, "unit_price": 99},
        ],
        "region": "EMEA",
        "term_months": 24,
        "status": "pending",
    }
    assert list(mapping(OPPORTUNITY)) == [
        "order_id",
        "customer",
        "currency",
        "lines",
        "region",
        "term_months",
        "status",
    ]


def test_nested_objects_with_no_fields_are_omitted() -> None:
    mapping = compile_rules("m", [rule("a.b.c", "expr", "x"), rule("a.d", "expr", "y")])
    assert mapping({}) == {}
    assert mapping({"x": 1}) == {"a": {"b": {"c": 1}}}
    assert mapping({"y": 0}) == {"a": {"d": 0}}


def test_defaults_apply_to_missing_and_null() -> None:
    mapping = compile_rules(
        "m",
        [
            rule("currency", "expr", "c", default="USD"),
            rule("tags", "expr", "t", default=["new"]),
            rule("flag", "expr", "f", default=False),
            rule("explicit_null_default", "expr", "n", default=None),
        ],
    )
    assert mapping({}) == {"currency": "USD", "tags": ["new"], "flag": False}
    assert mapping({"c": None, "f": False, "n": 0}) == {
        "currency": "USD",
        "tags": ["new"],
        "flag": False,
        "explicit_null_default": 0,
    }
    first = mapping({})
    first["tags"].append("mutated")
    assert mapping({})["tags"] == ["new"]  # each output gets its own copy


def test_lookups() -> None:
    table = {"US": "NA", "CA": "NA", "DE": "EMEA", 1: "one", "_default": "ROW"}
    mapping = compile_rules(
        "m",
        [
            rule("region", "expr", "country", lookup=table),
            rule("strict", "expr", "country", lookup={"US": "NA"}),
            rule("with_default", "expr", "country", lookup={"US": "NA"}, default="??"),
            rule("listed", "expr", "country", lookup={"US": ["a"]}),
        ],
    )
    assert mapping({"country": "US"}) == {
        "region": "NA",
        "strict": "NA",
        "with_default": "NA",
        "listed": ["a"],
    }
    assert mapping({"country": "JP"}) == {"region": "ROW", "with_default": "??"}
    assert mapping({"country": 1}) == {"region": "one", "with_default": "??"}  # str(1) == "1"
    assert mapping({}) == {"with_default": "??"}  # a missing value stays missing
    mapping({"country": "US"})["listed"].append("b")
    assert mapping({"country": "US"})["listed"] == ["a"]


def test_constants() -> None:
    mapping = compile_rules(
        "m",
        [
            rule("status", "const", "pending"),
            rule("version", "const", 2),
            rule("nothing", "const", None),
            rule("nothing_required", "const", None, required=True),
            rule("items", "const", [{"a": 1}]),
            rule("mapped", "const", "US", lookup={"US": "NA"}),
        ],
    )
    assert problems_of(mapping, {}) == [
        FieldProblem("nothing_required", "required field is missing", "REQUIRED")
    ]
    mapping = compile_rules("m", [rule("items", "const", [{"a": 1}]), rule("m", "const", "x")])
    first = mapping({})
    first["items"][0]["a"] = 2
    assert mapping({}) == {"items": [{"a": 1}], "m": "x"}


@pytest.mark.parametrize(
    ("value", "native", "string"),
    [("00123", "00123", "00123"), ("123", 123, "123"), (7, 7, "7"), (None, MISSING, MISSING)],
)
def test_templates_native_or_string(value: Any, native: Any, string: Any) -> None:
    mapping = compile_rules(
        "m",
        [
            rule("native", "template", "{{ source.v }}"),
            rule("string", "template", "{{ source.v }}", native=False),
        ],
    )
    out = mapping({"v": value})
    assert out.get("native", MISSING) == native
    assert out.get("string", MISSING) == string
    assert type(out.get("string", "")) is str


def test_templates_that_fall_back_to_jinja() -> None:
    mapping = compile_rules(
        "m",
        [
            rule("name", "template", "{{ source.first }} {{ source.last }}", native=False),
            rule("count", "template", "{{ range(source.n) | list | length }}"),
            rule("missing", "template", "{{ source.nope | int * 2 }}", default=-1),
        ],
    )
    assert mapping({"first": "Ada", "last": "L", "n": 3}) == {
        "name": "Ada L",
        "count": 3,
        "missing": -1,
    }
    assert "_ctx = {'source': src}" in mapping.__syncline_source__


def test_required_fields_are_all_listed() -> None:
    mapping = compile_rules(
        "m",
        [
            rule("order_id", "expr", "Id", required=True),
            rule("customer.id", "expr", "AccountId", required=True),
            rule("customer.name", "expr", "Account.Name"),
            rule("currency", "expr", "Currency", required=True, default="USD"),
            rule("term", "template", "{{ source.Term | int * 12 }}", required=True),
        ],
    )
    problems = problems_of(mapping, {"Account": {"Name": "Acme"}})
    assert problems == [
        FieldProblem("order_id", "required field is missing", "REQUIRED"),
        FieldProblem("customer.id", "required field is missing", "REQUIRED"),
        FieldProblem("term", "required field is missing", "REQUIRED"),
    ]
    with pytest.raises(MappingError, match=r"mapping 'm' failed: order_id: required field"):
        mapping({})


def test_failing_expressions_are_reported_with_the_others() -> None:
    mapping = compile_rules(
        "m",
        [
            rule("bad", "expr", "a < b"),
            rule("ok", "expr", "a"),
            rule("length", "expr", "length(a)"),
            rule("unsafe", "template", "{{ source.__class__ }}"),
            rule("need", "expr", "z", required=True),
        ],
    )
    problems = problems_of(mapping, {"a": 1, "b": "x"})
    assert [(p.path, p.code) for p in problems] == [
        ("bad", "EXPRESSION"),
        ("length", "EXPRESSION"),
        ("unsafe", "EXPRESSION"),
        ("need", "REQUIRED"),
    ]
    assert problems[0].message == (
        "'a < b' failed: TypeError: '<' not supported between instances of 'int' and 'str'"
    )
    assert problems[1].message.startswith("'length(a)' failed: JMESPathTypeError: ")
    assert problems[2].message == (
        "'{{ source.__class__ }}' failed: SecurityError: "
        "access to attribute '__class__' of 'dict' object is unsafe"
    )


def test_inputs_that_are_not_objects() -> None:
    mapping = compile_rules(
        "m", [rule("a", "expr", "a"), rule("all", "expr", "@"), rule("n", "expr", "length(@)")]
    )
    assert mapping([1, 2]) == {"all": [1, 2], "n": 2}
    assert mapping("abc") == {"all": "abc", "n": 3}
    assert problems_of(mapping, None) == [
        FieldProblem(
            "n",
            "'length(@)' failed: JMESPathTypeError: In function length(), invalid type for value:"
            " None, expected one of: ['string', 'array', 'object'], received: \"null\"",
            "EXPRESSION",
        )
    ]


def test_the_generated_source_is_kept_and_reads_fields_once() -> None:
    mapping = compile_rules(
        "m",
        [
            rule("name", "expr", "Account.Name"),
            rule("city", "expr", "Account.BillingCity"),
            rule("id", "expr", "Id"),
        ],
    )
    source = mapping.__syncline_source__
    assert source.startswith("def mapping(src, *, ")
    assert source.count("('Account')") == 1  # shared by both rules
    assert "_get0 = src.get if _isinstance(src, _dict) else _getter(src)" in source
    assert mapping.__syncline_mapping__ == "m"


def test_user_text_only_appears_as_literals() -> None:
    evil = "x'] = 1\nimport os  # "
    mapping = compile_rules(
        "m\nimport os",
        [
            rule(f"a.{evil}", "expr", '"odd key\\n\'"'),
            rule(evil, "const", evil),
            rule("t", "template", "{{ source['\\'); import os'] }}"),
        ],
    )
    assert mapping({"odd key\n'": 1, "'); import os": 2}) == {
        "a": {evil: 1},
        evil: evil,
        "t": 2,
    }
    assert "\nimport os" not in mapping.__syncline_source__


def test_invalid_rules() -> None:
    with pytest.raises(ValueError, match="mapped twice"):
        compile_rules("m", [rule("a", "expr", "x"), rule("a", "expr", "y")])
    with pytest.raises(ValueError, match="is inside field 'a'"):
        compile_rules("m", [rule("a", "expr", "x"), rule("a.b", "expr", "y")])
    with pytest.raises(ValueError, match="mapped twice, or is also an object"):
        compile_rules("m", [rule("a.b", "expr", "x"), rule("a", "expr", "y")])
    with pytest.raises(ExpressionSyntaxError, match="unknown function nope"):
        compile_rules("m", [rule("a", "expr", "nope(x)")])


def test_expressions_too_deep_to_inline_are_called() -> None:
    text = "a" + "[*].a" * 25
    mapping = compile_rules("m", [rule("deep", "expr", text), rule("b", "expr", "b")])
    data: Any = {"a": [1]}
    for _ in range(25):
        data = {"a": [data]}
    assert mapping({**data, "b": 2}) == {"deep": jmespath.search(text, data), "b": 2}


# -- property: the generated function equals a per-field reference --------------------------

OPTIONS = Options(custom_functions=FUNCTIONS)
TEXTS = [
    "a",
    "b.c",
    "a.b",
    "items[].{k: a, v: b}",
    "items[*].a",
    "items[0]",
    "items[-1].b",
    "a || b",
    "a < b",
    "length(items)",
    "[a, b]",
    "items[?a].b",
    "to_string(a)",
    "@",
    "b.*",
]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "x", "1"]))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)
    ),
    max_leaves=10,
)
DOCUMENTS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "a": VALUES,
            "b": VALUES,
            "items": st.lists(st.one_of(st.none(), st.dictionaries(st.sampled_from("ab"), VALUES))),
        },
    ),
    VALUES,
)
LOOKUPS = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["x", "1", "True", "", "_default"]), SCALARS, min_size=1),
)
LEAF = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["expr", "expr", "expr", "const"]),
        "text": st.sampled_from(TEXTS),
        "const": VALUES,
        "default": st.one_of(st.just(MISSING), VALUES),
        "lookup": LOOKUPS,
        "required": st.booleans(),
    }
)
KEYS = st.sampled_from(["a", "b", "c"])
TREES = st.dictionaries(
    KEYS, st.one_of(LEAF, st.dictionaries(KEYS, LEAF, min_size=1, max_size=3)), max_size=4
)


def rules_of(tree: dict[str, Any]) -> list[FieldRule]:
    rules = []
    for key, node in tree.items():
        leaves = [((key,), node)] if "kind" in node else [((key, k), v) for k, v in node.items()]
        for target, leaf in leaves:
            source = leaf["text"] if leaf["kind"] == "expr" else leaf["const"]
            rules.append(
                FieldRule(
                    target,
                    leaf["kind"],
                    source,
                    default=leaf["default"],
                    lookup=leaf["lookup"],
                    required=leaf["required"],
                )
            )
    return rules


def reference(rules: list[FieldRule], data: Any) -> Any:
    """The straightforward way: jmespath.search per field, then lookup, default, required."""
    out: dict[str, Any] = {}
    problems = set()
    for r in rules:
        try:
            value = (
                jmespath.search(r.source, data, options=OPTIONS)
                if r.kind == "expr"
                else copy.deepcopy(r.source)
            )
        except Exception:
            problems.add((".".join(r.target), "EXPRESSION"))
            continue
        if r.lookup is not None and value is not None:
            table = {str(k): v for k, v in r.lookup.items()}
            value = table.get(str(value), table.get("_default"))
        if value is None and r.default is not MISSING:
            value = copy.deepcopy(r.default)
        if value is None:
            if r.required:
                problems.add((".".join(r.target), "REQUIRED"))
            continue
        node = out
        for part in r.target[:-1]:
            node = node.setdefault(part, {})
        node[r.target[-1]] = value
    return ("error", problems) if problems else ("ok", out)


def generated(rules: list[FieldRule], data: Any) -> Any:
    try:
        return ("ok", compile_rules("m", rules)(data))
    except MappingError as exc:
        return ("error", {(p.path, p.code) for p in exc.problems})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES, data=DOCUMENTS)
def test_generated_function_equals_the_reference(tree: dict[str, Any], data: Any) -> None:
    rules = rules_of(tree)
    assert generated(rules, data) == reference(rules, data)
