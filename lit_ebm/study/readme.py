"""The README's block of a study's headline rows, between two marker lines, rendered from the
study's results.json (:func:`lit_ebm.study.report.readme_block`), so that the README says only
what the results file holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_ebm.errors import ConfigError
from lit_ebm.study.report import readme_block


def markers(name: str) -> tuple[str, str]:
    return f"<!-- study {name}: rendered from its results.json -->", f"<!-- end study {name} -->"


def block_in(text: str, name: str) -> str | None:
    """The text between the study's markers in ``text``; None when they are absent."""
    begin, end = markers(name)
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def write_readme_block(readme: Path, name: str, results: dict[str, Any]) -> None:
    """Replace the block between the study's markers in ``readme`` by its rendering."""
    text = readme.read_text()
    if block_in(text, name) is None:
        begin, end = markers(name)
        raise ConfigError(f"{readme} has no block for study {name}: add the lines '{begin}' "
                          f"and '{end}' where the table goes")
    begin, end = markers(name)
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{begin}\n{readme_block(results)}{end}{tail}")
