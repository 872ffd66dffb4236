"""docs/reference.md is what the schema writes, and names every key a config can set."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from lit_ebm.config import load_config
from lit_ebm.config.reference import reference_markdown, rule_words
from lit_ebm.config.rules import batch_limit, one_of, positive
from lit_ebm.config.schema import Config

REPO = Path(__file__).resolve().parent.parent


def leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key under a settings dataclass, dotted."""
    keys = []
    for item in fields(node):
        value = getattr(node, item.name)
        keys += leaf_keys(value, f"{prefix}{item.name}.") if is_dataclass(value) else [
            f"{prefix}{item.name}"]
    return keys


def test_the_reference_page_is_what_the_schema_writes() -> None:
    assert (REPO / "docs" / "reference.md").read_text() == reference_markdown(), (
        "docs/reference.md is stale: python -m lit_ebm.config.reference > docs/reference.md")


def test_every_key_has_a_row_with_its_default() -> None:
    page, config = reference_markdown(), load_config([], [])
    keys = leaf_keys(Config())
    assert "model.energy_optim.lr" in keys and "trainer.precision" in keys
    for key in keys:
        assert f"| `{key}` |" in page, key
    assert "| `model.energy_optim.lr` | float | `0.0001` |" in page
    assert config.model.energy_optim.lr == 0.0001


def test_rules_speak_for_themselves() -> None:
    assert rule_words((positive,)) == "a positive number"
    assert rule_words((one_of("a", "b"), positive)) == "one of a, b and a positive number"
    assert rule_words((batch_limit(1),)) == "a fraction in (0, 1] or a number of batches >= 1"
