"""Where benchmarks leave their figures: printed, and written to benchmarks/results/NAME.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def report(name: str, results: dict[str, Any]) -> Path:
    """Print ``results`` as JSON and write them to ``benchmarks/results/<name>.json``."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    path.write_text(text)
    print(text, end="")
    print(f"written to {path}")
    return path
