"""``python -m lit_ebm.study``: run a study file to its end, or render what it has recorded."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

import torch

from lit_ebm.errors import EXIT_USAGE, ConfigError
from lit_ebm.study.measure import References
from lit_ebm.study.readme import write_readme_block
from lit_ebm.study.runner import RESULTS_FILE, StudyRunner, load_results, save_results
from lit_ebm.study.spec import load_study

SHIPPED = Path(str(resources.files("lit_ebm") / "studies"))


def study_path(name_or_path: str) -> Path:
    """A study file's path: as given, or a shipped study's name (``mnist5k``)."""
    path = Path(name_or_path)
    shipped = SHIPPED / f"{name_or_path}.yaml"
    return shipped if not path.exists() and shipped.is_file() else path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_ebm.study",
        description="Run a comparison study (docs/studies.md): an ML start, arms continued "
                    "from it for equal compute on several training seeds, each measured once "
                    "on the test split. Stopped studies continue where they stopped.",
        epilog="Example: python -m lit_ebm.study --study mnist5k\nExit codes: 0 done, "
               "2 bad study file or settings.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True,
                        help="a study file, or a shipped study's name (mnist5k, mnist5k_ablation, "
                             "fashion_mnist)")
    parser.add_argument("--results-dir", default=None,
                        help="where results.json, table.md, curves and grids go (default: "
                             "benchmarks/results/study_<name>)")
    parser.add_argument("--output-dir", default=None,
                        help="the run folders (default: runs/study_<name>)")
    parser.add_argument("--render-only", action="store_true",
                        help="render table.md and the curves from results.json; train nothing")
    parser.add_argument("--readme", default=None, metavar="README.md",
                        help="also write the study's block of headline rows into this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        study = load_study(study_path(args.study))
        folder = Path(args.results_dir or f"benchmarks/results/study_{study.name}")
        results = load_results(folder, study)
        if args.render_only:
            if not (folder / RESULTS_FILE).is_file():
                raise ConfigError(f"{folder / RESULTS_FILE} does not exist: run the study "
                                  "first (without --render-only)")
            save_results(results, folder)
        else:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            output_dir = Path(args.output_dir or f"runs/study_{study.name}")
            StudyRunner(study, folder, output_dir, results,
                        References(study.evaluation, device)).run()
        if args.readme is not None:
            write_readme_block(Path(args.readme), study.name, json.loads(
                (folder / RESULTS_FILE).read_text()))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"results: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
