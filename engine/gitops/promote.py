"""`syncline promote --from ENV --to ENV`: the target environment's `pins` become the flow
versions the source runs: its pins, and for every flow it leaves unpinned the version it resolves
to (the newest), so the target never floats to a version nobody promoted.

`syncline.yaml` is edited, not rewritten. ruamel.yaml's round-trip composer finds the pins (and
their line, column and indentation); only their text is replaced, so every comment, blank line,
quote, flow-style map and odd spacing elsewhere stays byte for byte (a round-trip dump would
normalise `{ a: 1 }` to `{a: 1}` and `key:   value` to `key: value`). Within the target's pins,
a pin that stays changes only its version (its quoting, its place and its line's comment stay),
a pin that goes loses its line, a new one is added after the last, in the style of the others or
the environment's own indentation. The result is parsed again and must equal the old data with
only the pins changed, or nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.compiler import compile_loaded
from engine.compiler.plan import Plan, build_plan
from engine.errors import DefinitionErrors, UsageError
from engine.loader import PROJECT_FILE, load_project, load_yaml

Pins = dict[str, int]


class SourceErrors(DefinitionErrors):
    """The source environment does not compile, so what it runs is unknown."""


@dataclass(frozen=True)
class Promotion:
    """What promoting does to `syncline.yaml`."""

    source: str
    target: str
    old_pins: Pins  # the target's pins before
    new_pins: Pins  # the versions the source runs, now the target's pins
    text: str  # the new file text (the old one when nothing changes)

    @property
    def changed(self) -> bool:
        return self.old_pins != self.new_pins


def promote_text(text: str, source: str, target: str, resolved: Pins | None = None) -> Promotion:
    """The project file `text` with `target`'s pins replaced by `resolved` (the flow versions
    the source runs), or by default by the source's own pins."""
    environments = _environments(text)
    for name in (source, target):
        if name not in environments:
            known = ", ".join(environments) or "none"
            raise UsageError(f"unknown environment '{name}' (known: {known})")
    if source == target:
        raise UsageError("--from and --to name the same environment")
    new_pins = _pins(environments[source]) if resolved is None else dict(resolved)
    old_pins = _pins(environments[target])
    if new_pins == old_pins:
        return Promotion(source, target, old_pins, new_pins, text)
    edited = _splice(text, target, new_pins)
    _verify(text, edited, target, new_pins)
    return Promotion(source, target, old_pins, new_pins, edited)


def _environments(text: str) -> dict[str, Any]:
    docs, problems = load_yaml(text, "syncline.yaml")
    if problems or len(docs) != 1 or not isinstance(docs[0].data, dict):
        detail = problems[0].format() if problems else "expected one Project document"
        raise UsageError(f"cannot read syncline.yaml: {detail}")
    spec = docs[0].data.get("spec") or {}
    environments = spec.get("environments") if isinstance(spec, dict) else None
    return environments if isinstance(environments, dict) else {}


def _pins(environment: Any) -> Pins:
    pins = environment.get("pins") if isinstance(environment, dict) else None
    return dict(pins) if isinstance(pins, dict) else {}


def _splice(text: str, target: str, pins: Pins) -> str:
    """Replace (or add) the target's pins in the text, touching nothing else."""
    try:
        root = YAML(typ="rt").compose(text)
    except YAMLError as exc:
        raise UsageError(f"cannot read syncline.yaml: {exc}") from exc
    env_key, env = _entry(_entry(_entry(root, "spec")[1], "environments")[1], target)
    if isinstance(env, MappingNode):
        found = next(((k, v) for k, v in env.value if k.value == "pins"), None)
        if found is not None:
            return _replace_pins(text, found[0], found[1], pins)
        return _add_pins(text, env_key, env, pins)
    if _empty(env):
        at = _after_colon(text, env_key)
        return text[:at] + f" {{pins: {_flow(pins)}}}" + text[at:]
    raise UsageError(f"environment '{target}' in syncline.yaml is not a mapping")


def _entry(node: Node | None, key: str) -> tuple[Node, Node]:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return key_node, value_node
    raise UsageError(f"syncline.yaml has no '{key}' where promote expects it")


def _replace_pins(text: str, key: Node, value: Node, pins: Pins) -> str:
    if isinstance(value, MappingNode) and value.value and pins:
        scalars = all(isinstance(v, ScalarNode) for _, v in value.value)
        same_keys = {k.value for k, _ in value.value} == set(pins)
        if scalars and (same_keys or not value.flow_style):
            return _edit_entries(text, value, pins)
    if isinstance(value, MappingNode):  # the target's keys keep their order
        kept = [str(k.value) for k, _ in value.value if k.value in pins]
        pins = {name: pins[name] for name in [*kept, *(n for n in pins if n not in kept)]}
    if _empty(value) or isinstance(value, MappingNode) and not value.flow_style:
        at = _after_colon(text, key)
        return text[:at] + " " + _flow(pins) + text[_end(text, value) if value.value else at :]
    return text[: value.start_mark.index] + _flow(pins) + text[_end(text, value) :]


def _edit_entries(text: str, mapping: MappingNode, pins: Pins) -> str:
    """Pins edited entry by entry: a kept pin gets its new version in place (its quoting and
    its line's comment stay), a dropped pin loses its line, a new pin gets a line after the
    last one (block style only: a flow-style map is edited so only when its keys stay)."""
    eol = _eol(text)
    unterminated = not text.endswith("\n")  # edit as if the last line had its line break
    text += eol if unterminated else ""
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), never overlapping
    for key, value in mapping.value:
        if key.value in pins:
            if value.value != str(pins[key.value]):
                edits.append((value.start_mark.index, value.end_mark.index, str(pins[key.value])))
            continue
        start = text.rfind("\n", 0, key.start_mark.index) + 1
        edits.append((start, text.index("\n", value.end_mark.index) + 1, ""))
    known = {key.value for key, _ in mapping.value}
    added = {name: version for name, version in pins.items() if name not in known}
    if added:
        at = text.index("\n", mapping.value[-1][1].end_mark.index) + 1
        column = mapping.value[0][0].start_mark.column
        edits.append((at, at, _block(added, column, eol) + eol))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text[: -len(eol)] if unterminated and text.endswith(eol) else text


def _add_pins(text: str, env_key: Node, env: MappingNode, pins: Pins) -> str:
    if env.flow_style:
        if not env.value:
            at = env.end_mark.index - 1  # inside `{}`
            return text[:at] + f"pins: {_flow(pins)}" + text[at:]
        at = _end(text, env.value[-1][1])
        return text[:at] + f", pins: {_flow(pins)}" + text[at:]
    last = _end(text, env)
    eol = _eol(text)
    column = env.value[0][0].start_mark.column
    step = max(column - env_key.start_mark.column, 1)
    line_end = text.find("\n", last)
    at = len(text) if line_end < 0 else line_end + 1
    lead = "" if text[:at].endswith("\n") else eol
    addition = f"{' ' * column}pins:{eol}{_block(pins, column + step, eol)}{eol}"
    return text[:at] + lead + addition + text[at:]


def _end(text: str, node: Node) -> int:
    """Where a node's own text ends (a block mapping's end mark would take in the comments and
    blank lines after it)."""
    if isinstance(node, MappingNode) and not node.flow_style and node.value:
        key, value = node.value[-1]
        return _after_colon(text, key) if _empty(value) else _end(text, value)
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        return _end(text, node.value[-1])
    return int(node.end_mark.index)


def _empty(node: Node) -> bool:
    """A value left out (`key:` and nothing): its marks point at the next token."""
    return (
        isinstance(node, ScalarNode)
        and node.value == ""
        and node.start_mark.index == node.end_mark.index
    )


def _after_colon(text: str, key: Node) -> int:
    return text.index(":", key.end_mark.index) + 1


def _eol(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _block(pins: Pins, column: int, eol: str = "\n") -> str:
    return eol.join(f"{' ' * column}{_key(name)}: {version}" for name, version in pins.items())


def _flow(pins: Pins) -> str:
    return "{" + ", ".join(f"{_key(name)}: {version}" for name, version in pins.items()) + "}"


def _key(name: str) -> str:
    """A plain key, or a quoted one where YAML would read the plain text as something else."""
    docs, problems = load_yaml(f"{name}: 1", "key")
    plain = not problems and docs and isinstance(docs[0].data, dict) and name in docs[0].data
    return name if plain else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _verify(old: str, new: str, target: str, pins: Pins) -> None:
    """The edit must change the target's pins and nothing else."""
    before, after = load_yaml(old, "syncline.yaml")[0], load_yaml(new, "syncline.yaml")[0]
    expected = before[0].data if before else None
    if isinstance(expected, dict):
        env = expected["spec"]["environments"]
        env[target] = {**(env[target] or {}), "pins": dict(pins)}
    if not after or after[0].data != expected or _pins_of(after[0], target) != pins:
        raise UsageError(
            "promote could not edit syncline.yaml safely (unusual layout around "
            f"the pins of '{target}'); set its pins by hand"
        )


def _pins_of(doc: Any, target: str) -> Pins:
    return _pins(doc.data["spec"]["environments"][target])


def promote_project(
    project: Path, source: str, target: str, environ: Mapping[str, str]
) -> tuple[Promotion, Plan | None, Plan]:
    """Promote in `project`'s syncline.yaml (not written here): the target is pinned to every
    flow version the source runs; compile the target environment before and after. `before` is
    None when it does not compile today (a pin the promotion replaces may name a flow version
    that is gone). DefinitionErrors when the source or `after` does not compile."""
    path = project / PROJECT_FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    promote_text(text, source, target)  # usage errors (unknown environments) first
    loaded = load_project(project)
    try:
        runs = compile_loaded(loaded, environment=source, environ=environ)
    except DefinitionErrors as exc:
        raise SourceErrors(exc.diagnostics) from exc
    resolved = {name: flow.version for name, flow in sorted(runs.flows.items())}
    promotion = promote_text(text, source, target, resolved)
    try:
        before = compile_loaded(loaded, environment=target, environ=environ)
    except DefinitionErrors:
        before = None
    docs, _ = load_yaml(promotion.text, PROJECT_FILE)
    after = build_plan(
        docs[0],
        loaded.documents,
        environment=target,
        environ=environ,
        diagnostics=loaded.diagnostics,
    )
    return promotion, before, after
