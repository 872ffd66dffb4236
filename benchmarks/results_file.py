"""Where benchmarks leave their figures: printed, and written to benchmarks/results/NAME.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def report(name: str, results: dict[str, Any], folder: Path = RESULTS_DIR) -> Path:
    """Print ``results`` as JSON and write them to ``<folder>/<name>.json`` (by default
    ``benchmarks/results/``)."""
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    path.write_text(text)
    print(text, end="")
    print(f"written to {path}")
    return path
