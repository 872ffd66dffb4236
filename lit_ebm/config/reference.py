"""The reference of every config key, written from the schema itself (its types, defaults and
comments): ``python -m lit_ebm.config.reference > docs/reference.md``. A test fails when the page
differs from what this module writes, so the reference cannot go stale."""

from __future__ import annotations

import inspect
import io
import re
import sys
import tokenize
from dataclasses import fields, is_dataclass
from typing import Any

from lit_ebm.config import schema
from lit_ebm.config.rules import Check
from lit_ebm.config.schema import Config

HEADER = """# Config reference

Every key of a run's config, with its type and default, grouped as in a YAML file. Written by
`python -m lit_ebm.config.reference` from `lit_ebm/config/schema.py`, where each key's rules live
beside it; do not edit it by hand. How configs compose and what is checked:
[configuration](configuration.md).
"""


def comments_by_line(source: str) -> dict[int, str]:
    """Each comment of ``source`` by its line number, without the ``#``."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {token.start[0]: token.string.lstrip("#").strip()
            for token in tokens if token.type == tokenize.COMMENT}


def field_notes(cls: type) -> dict[str, str]:
    """What the schema says of each field of ``cls``: the comment lines right above it and the
    comment on its own line, joined."""
    lines, first = inspect.getsourcelines(cls)
    comments = comments_by_line(inspect.getsource(schema))
    notes = {}
    for offset, line in enumerate(lines):
        match = re.match(r" {4}(\w+):", line)
        if match is None or match.group(1) in notes:
            continue
        number, above = first + offset, list[str]()
        while comments.get(number - 1 - len(above)) is not None and re.match(
                r"\s*#", lines[offset - 1 - len(above)]):
            above.insert(0, comments[number - 1 - len(above)])
        notes[match.group(1)] = " ".join([*above, comments.get(number, "")]).strip()
    return notes


PROBES = (float("-inf"), -1, [-1.0, -1.0, -1.0])  # values that most rules refuse


def rule_words(checks: tuple[Check, ...]) -> str:
    """What ``checks`` accept, in their own words: what each says when it refuses a probe
    (the alternatives one rule names joined by "or", the rules by "and")."""
    rules = []
    for check in checks:
        words: list[str] = []
        for probe in PROBES:
            try:
                expected = check(probe)
            except TypeError:
                continue
            if expected is not None and expected not in words:
                words.append(expected)
        rules.append(" or ".join(words))
    return " and ".join(rule for rule in rules if rule)


def cell(text: str) -> str:
    """``text`` safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def yaml_value(value: Any) -> str:
    """``value`` as a YAML file would spell it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    return str(value)


def sections(node: Any, prefix: str = "") -> list[str]:
    """The markdown of ``node``'s section (its plain keys as a table), then of each nested
    section, depth first."""
    notes, keys, nested = field_notes(type(node)), [], []
    for item in fields(node):
        value = getattr(node, item.name)
        if is_dataclass(value):
            nested.append((item.name, value))
        else:
            rules = rule_words(item.metadata.get("checks", ()))
            keys.append(f"| `{prefix}{item.name}` | {cell(str(item.type))} | "
                        f"`{cell(yaml_value(value))}` | {cell(rules)} | "
                        f"{cell(notes.get(item.name, ''))} |")
    doc = " ".join((inspect.getdoc(type(node)) or "").split())
    title = prefix.rstrip(".") or "top level"
    parts = [f"## `{title}`\n", doc, ""]
    if keys:
        parts += ["| key | type | default | accepts | notes |", "| --- | --- | --- | --- | --- |",
                  *keys, ""]
    for name, value in nested:
        parts += sections(value, f"{prefix}{name}.")
    return parts


def reference_markdown() -> str:
    """The whole page."""
    return "\n".join([HEADER, *sections(Config())]).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
