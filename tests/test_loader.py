"""The loader: plain data with locations out, hostile YAML refused, never a crash."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.loader import load_yaml, parse_content
from engine.yaml_nodes import MAX_NODES


def test_documents_keep_locations_of_keys_and_items() -> None:
    text = "a: 1\nb:\n  - x\n  - {c: 2}\n---\nd: e\n"
    docs, problems = load_yaml(text, "f.yaml")
    assert problems == []
    assert [d.data for d in docs] == [{"a": 1, "b": ["x", {"c": 2}]}, {"d": "e"}]
    assert str(docs[0].locate(("b", 1, "c"))) == "f.yaml:4:6"
    assert str(docs[0].locate(("b", 0))) == "f.yaml:3:5"
    assert str(docs[1].locate(("d",))) == "f.yaml:6:1"
    assert str(docs[0].locate(("b", 7, "nope"))) == "f.yaml:2:1"  # nearest known ancestor


def test_scalars_follow_yaml_1_2_and_keys_become_strings() -> None:
    docs, _ = load_yaml("a: 0x1F\nb: 1_000\nc: .inf\nd: ~\ne: yes\nf: 2024-01-01\n409: x\n", "f")
    data = docs[0].data
    assert data == {"a": 31, "b": 1000, "c": float("inf"), "d": None, "e": "yes",
                    "f": "2024-01-01", "409": "x"}


def test_merge_keys_and_aliases_expand() -> None:
    docs, problems = load_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "f")
    assert problems == []
    assert docs[0].data["other"] == {"x": 1, "y": 3}


def test_custom_and_python_tags_are_refused() -> None:
    for text in ("a: !foo 3", "a: !!python/object/apply:os.system [ls]", "a: !!binary aGk="):
        _, problems = load_yaml(text, "f.yaml")
        assert [p.code for p in problems] == ["E_YAML_TAG"], text


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    started = time.perf_counter()
    _, problems = load_yaml("\n".join(lines), "bomb.yaml")
    assert [p.code for p in problems] == ["E_YAML_ALIAS"]
    assert str(MAX_NODES) in problems[0].message
    assert time.perf_counter() - started < 5  # refused by budget, not by exhaustion


def test_recursive_alias_and_deep_nesting_are_refused() -> None:
    assert load_yaml("&a [*a]", "f")[1][0].code == "E_YAML_ALIAS"
    assert load_yaml("[" * 5000, "f")[1][0].code == "E_YAML_DEPTH"
    too_deep = "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80))
    assert load_yaml(too_deep, "f")[1][0].code == "E_YAML"


def test_duplicate_key_is_located_at_the_second_key() -> None:
    _, problems = load_yaml("a:\n  b: 1\n  b: 2\n", "f.yaml")
    assert [(p.code, str(p.location)) for p in problems] == [("E_YAML_DUPKEY", "f.yaml:3:3")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\n ,?%@`~.0123456789\t\\")),
               max_size=200))
def test_loader_never_crashes_on_yaml_like_text(text: str) -> None:
    docs, problems = load_yaml(text, "fuzz.yaml")
    assert all(p.code.startswith("E_YAML") for p in problems)
    assert all(isinstance(d.data, dict | list | str | int | float | bool | None) for d in docs)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_loader_never_crashes_on_arbitrary_text(text: str) -> None:
    docs, problems = load_yaml(text, "fuzz.yaml")
    assert all(p.code.startswith("E_YAML") for p in problems)


@pytest.mark.parametrize(("text", "message"), [
    ("spec:\n  when: steps.a.b == 'x': y\n",
     "f.yaml:2:25: error[E_YAML] invalid YAML: mapping values are not allowed in this context "
     "(hint: an expression holding [ ] { } : or ` must be quoted: when: \"steps.a.b == 'x': y\")"),
    ("spec:\n  filter: [?x == 'a'].b\n",
     "f.yaml:2:22: error[E_YAML] invalid YAML: did not find expected key (hint: an expression "
     "holding [ ] { } : or ` must be quoted: filter: \"[?x == 'a'].b\")"),
    ("spec:\n  assert: `1` > x\n",
     "f.yaml:2:11: error[E_YAML] invalid YAML: found character that cannot start any token "
     "(hint: an expression holding [ ] { } : or ` must be quoted: assert: \"`1` > x\")"),
    ("spec:\n  steps:\n    - id: a\n     set: {}\n",
     "f.yaml:4:6: error[E_YAML] invalid YAML: did not find expected '-' indicator (hint: check "
     "this line's indentation against the lines above it)"),
    ("spec:\n\ta: 1\n",
     "f.yaml:2:1: error[E_YAML] invalid YAML: found character that cannot start any token "
     "(hint: indent with spaces; YAML does not allow tabs)"),
])
def test_yaml_syntax_errors_say_what_probably_went_wrong(text: str, message: str) -> None:
    _, (diagnostic,) = load_yaml(text, "f.yaml")
    assert diagnostic.format() == message


def test_a_file_that_fails_to_load_names_what_it_defined() -> None:
    parsed = parse_content(
        "kind: Schema\nmetadata: {name: a}\nspec: {x: 1, x: 2}\n---\n"
        "kind: Mapping\nmetadata:\n  owner: x\n  name: 'm-1'\nspec: {}\n", "f.yaml")
    assert parsed.documents == [] and parsed.unloaded == (("Schema", "a"), ("Mapping", "m-1"))


def test_one_line_values_know_where_each_character_stands() -> None:
    (doc,), _ = load_yaml("a: plain text\nb: 'it''s'\nc: \"quoted\"\nd: |\n  block\n", "f.yaml")
    assert str(doc.locate_in(("a",), 6)) == "f.yaml:1:10"
    assert str(doc.locate_in(("b",), 3)) == "f.yaml:2:1"   # an escape: the key's place
    assert str(doc.locate_in(("c",), 2)) == "f.yaml:3:7"
    assert str(doc.locate_in(("d",), 2)) == "f.yaml:4:1"   # a block scalar: the key's place


@pytest.mark.parametrize("text", ["[" * 200_000, "a: " + "{a: " * 200_000, "- " * 200_000 + "x"])
def test_nesting_that_would_overflow_the_parser_is_refused_before_parsing(text: str) -> None:
    (problem,) = load_yaml(text, "f")[1]   # the C parser died of SIGSEGV here
    assert (problem.code, problem.location.line) == ("E_YAML_DEPTH", 1)
    assert "deeper than 1000 levels" in problem.message


def test_brackets_inside_quoted_strings_and_comments_are_no_nesting() -> None:
    text = "".join(f"k{i}: '[[[{{' # [[[\n" for i in range(2000))
    documents, problems = load_yaml(text, "f")
    assert problems == [] and documents[0].data["k1999"] == "[[[{"


def test_integers_beyond_64_bits_are_refused_with_a_location() -> None:
    (problem,) = load_yaml("a: 1\nb: 0x" + "f" * 5000 + "\n", "f")[1]
    assert (problem.code, problem.location.line, problem.location.col) == ("E_YAML", 2, 4)
    assert "out of range" in problem.message
    assert load_yaml("a: 18446744073709551615", "f")[0][0].data == {"a": 2**64 - 1}
