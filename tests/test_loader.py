"""The loader: plain data with locations out, hostile YAML refused, never a crash."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.loader import MAX_NODES, load_yaml


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
    assert load_yaml("[" * 5000, "f")[1][0].code == "E_YAML"
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
