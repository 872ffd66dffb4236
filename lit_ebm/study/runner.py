"""Running a study: the ML start of each generator, then for each training seed the arms
continued from it, each trained for its budget and measured at once, its figures written to
``results.json`` before the next run starts. A study that is stopped continues where it
stopped: a run whose figures ``results.json`` holds is never trained again, and the ML start is
reused from its run folder, or retrained from its seed (and its parameter checksum compared
with the recorded one) where the folder is gone."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lit_ebm.errors import ConfigError
from lit_ebm.study.curves import draw_curves
from lit_ebm.study.measure import References, measure_run
from lit_ebm.study.report import render_table
from lit_ebm.study.runs import (
    TrainedRun,
    checkpoint_budget,
    export_generator,
    generator_checksum,
    train_run,
)
from lit_ebm.study.spec import Study, normalised

RESULTS_FILE = "results.json"


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}")


def load_results(folder: Path, study: Study) -> dict[str, Any]:
    """The results recorded so far in ``folder`` for ``study`` (none: an empty record);
    refuses results made by a different study file. The study is recorded whole, with the
    defaults of settings added since a file was written."""
    recorded = json.loads(json.dumps(asdict(study)))
    path = folder / RESULTS_FILE
    if not path.is_file():
        return {"study": recorded, "machine": machine(), "runs": {}}
    stored = json.loads(path.read_text())
    if json.loads(json.dumps(normalised(stored["study"]))) != recorded:
        raise ConfigError(f"{path} holds the results of a different study file: restore the "
                          "study file it was made with, or move it away to start afresh")
    return stored | {"study": recorded}


def save_results(results: dict[str, Any], folder: Path) -> None:
    """Write results.json (whole or not at all), then table.md and the curves from it."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{RESULTS_FILE}.partial"
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(folder / RESULTS_FILE)
    (folder / "table.md").write_text(render_table(results))
    for generator in results["study"]["generators"]:
        if any(run["generator"] == generator for run in results["runs"].values()):
            draw_curves(results, generator, folder / f"curves_{generator}.png")


def run_id(generator: str, arm: str, seed: int | None = None) -> str:
    return f"{generator}/{arm}" if seed is None else f"{generator}/{arm}/seed{seed}"


@dataclass
class StudyRunner:
    """Trains and measures what ``results`` does not hold yet, saving after every run."""

    study: Study
    folder: Path
    output_dir: Path
    results: dict[str, Any]
    references: References

    def run(self) -> None:
        for generator in self.study.generators:
            seeds = [s for s in self.study.seeds if not all(
                run_id(generator, arm, s) in self.results["runs"]
                for arm in self.row_names(generator))]
            if seeds or run_id(generator, "start") not in self.results["runs"]:
                start = self.start(generator)
                for seed in seeds:
                    self.arms(generator, seed, start)
                    self.ablations(generator, seed, start)
            elif not self.start_file(generator).is_file():
                self.start(generator, train=False)  # export it from its run folder, if there

    def row_names(self, generator: str) -> list[str]:
        """The arms and ablation rows each training seed of ``generator`` has."""
        return [*self.study.arms, *self.study.generators[generator].ablations]

    def start_file(self, generator: str) -> Path:
        """Where the ML start's generator is kept beside the results (small enough to commit),
        so that a study resumed elsewhere starts its arms from the same model."""
        return self.folder / f"start_{generator}.pt"

    def start(self, generator: str, train: bool = True) -> Path:
        """The ML start's generator: the file beside the results, or exported from its run
        folder, or (with ``train``) trained from ``start_seed``; a retrained start whose
        parameter checksum differs from the recorded one is said and recorded."""
        name, key = f"{generator}_start", run_id(generator, "start")
        recorded, kept = self.results["runs"].get(key), self.start_file(generator)
        if recorded is not None:
            if kept.is_file() and generator_checksum(kept) == recorded.get("start_file_checksum"):
                return kept
            for found in sorted(self.output_dir.glob(f"{name}/version_*/checkpoints/last.ckpt")):
                if checkpoint_budget(found)[1] == recorded["trained"]["checksum"]:
                    return self.keep_start(generator, found)
        if not train:
            return kept
        spec = self.study.generators[generator].start
        trained = train_run(self.study, spec, name, self.study.start_seed, self.output_dir)
        if recorded is None:
            self.record(generator, "start", None, trained, ebm=False)
        elif trained.checksum != recorded["trained"]["checksum"]:
            print(f"warning: the retrained ML start of {generator} has parameter checksum "
                  f"{trained.checksum}, not the recorded {recorded['trained']['checksum']}: "
                  "the arms still to run start from a different model", file=sys.stderr)
            recorded.setdefault("retrained_checksums", []).append(trained.checksum)
        return self.keep_start(generator, trained.checkpoint)

    def keep_start(self, generator: str, checkpoint: Path) -> Path:
        """Write the start's generator beside the results and record its checksum."""
        kept = self.start_file(generator)
        recorded = self.results["runs"][run_id(generator, "start")]
        recorded["start_file_checksum"] = export_generator(checkpoint, kept)
        save_results(self.results, self.folder)
        return kept

    def arms(self, generator: str, seed: int, start: Path) -> None:
        """The study's arms for one training seed, skipping what is held: (a), (b) then (c)
        over it, (d)."""
        budget, arms, held = self.study.budget_seconds, self.study.arms, self.results["runs"]

        def needed(arm: str) -> bool:
            return arm in arms and run_id(generator, arm, seed) not in held

        if needed("ml_continued"):
            self.record(generator, "ml_continued", seed,
                        self.train(generator, "ml_continued", seed, start, budget), ebm=False)
        if needed("adversarial") or needed("energy_over_adversarial"):  # (c) needs (b)'s run
            adversarial = self.train(generator, "adversarial", seed, start,
                                     self.study.adversarial_seconds())
            energy = self.train(generator, "energy_over_adversarial", seed,
                                adversarial.checkpoint, self.study.energy_share * budget) \
                if "energy_over_adversarial" in arms else None
            self.record(generator, "adversarial", seed, adversarial, ebm=False)
            if energy is not None:
                self.record(generator, "energy_over_adversarial", seed, energy, ebm=True)
        if needed("energy_over_ml"):
            self.record(generator, "energy_over_ml", seed,
                        self.train(generator, "energy_over_ml", seed, start, budget), ebm=True)

    def ablations(self, generator: str, seed: int, start: Path) -> None:
        """The ablation rows of (b) for one training seed, each for (b)'s budget."""
        for name in self.study.generators[generator].ablations:
            if run_id(generator, name, seed) not in self.results["runs"]:
                trained = self.train(generator, name, seed, start,
                                     self.study.adversarial_seconds())
                self.record(generator, name, seed, trained, ebm=False)

    def train(self, generator: str, row: str, seed: int, init: Path,
              seconds: float) -> TrainedRun:
        """Train the arm or ablation row ``row`` of one training seed from ``init`` for
        ``seconds``."""
        spec = self.study.generators[generator].spec(row)
        return train_run(self.study, spec, f"{generator}_{row}_seed{seed}", seed,
                         self.output_dir, init, seconds)

    def record(self, generator: str, arm: str, seed: int | None, trained: TrainedRun,
               ebm: bool) -> None:
        """Measure ``trained`` for every sampling seed and save its figures."""
        spec = self.study.evaluation
        first = seed is None or seed == self.study.seeds[0]
        evaluation = {}
        for sampling_seed in spec.sampling_seeds:
            figure = (self.folder / "samples" / f"{generator}_{arm}.png"
                      if first and sampling_seed == spec.sampling_seeds[0] else None)
            evaluation[str(sampling_seed)] = measure_run(
                trained.checkpoint, ebm, spec, sampling_seed, self.references, figure,
                grid=seed is None or seed in spec.grid_seeds)
        self.results["runs"][run_id(generator, arm, seed)] = {
            "generator": generator, "arm": arm, "seed": seed,
            "checkpoint": str(trained.checkpoint), "trained": trained.record(),
            "evaluation": evaluation}
        save_results(self.results, self.folder)
