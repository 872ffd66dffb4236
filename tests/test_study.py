"""The study runner on a tiny study (seconds): it trains the ML start and every arm, measures
each on the test split, writes results.json, table.md, curves and grids, resumes without
training again what it holds, and the README's study blocks are what the results render."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lit_ebm.study.__main__ import main
from lit_ebm.study.readme import block_in, markers, write_readme_block
from lit_ebm.study.report import beats, readme_block, render_table
from lit_ebm.study.spec import load_study
from tests.tiny import TINY_IMAGE_RUN

REPO = Path(__file__).resolve().parent.parent
TINY = [o for o in TINY_IMAGE_RUN if not o.startswith(("data.name", "trainer.max_epochs"))]
ARM = [*TINY, "eval.every_n_epochs=1", "eval.num_samples=200", "eval.kid_subset_size=100"]


def tiny_study(folder: Path) -> Path:
    """A study of a tiny RealNVP: one training seed, budgets of two seconds."""
    def spec(config: str, *extra: str) -> dict:
        return {"config": config, "overrides": [*extra]}

    study = {
        "name": "tiny", "data": "mnist5k", "seeds": [0], "budget_seconds": 2.0,
        "generators": {"realnvp": {
            "start": spec("mnist5k_realnvp_mle", *TINY, "trainer.max_epochs=1"),
            "ml_continued": spec("mnist5k_realnvp_mle", *ARM),
            "adversarial": spec("mnist5k_realnvp_hybrid", *ARM),
            "energy": spec("mnist5k_realnvp_energy", *TINY)}},
        "evaluation": {"num_samples": 130, "temperatures": [1.0], "candidates": [2],
                       "mala_steps": [2], "mala_burn_in": 1, "log_z_samples": 20,
                       "log_z_temperatures": 2, "batch_size": 130,
                       "headline": {"method": "sir", "steps": 2}},
    }
    path = folder / "tiny.yaml"
    path.write_text(json.dumps(study))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("study")
    study, results, runs = tiny_study(folder), folder / "results", folder / "runs"
    assert main(["--study", str(study), "--results-dir", str(results),
                 "--output-dir", str(runs)]) == 0
    return study, results, runs


def test_a_tiny_study_trains_every_arm_and_measures_it_on_the_test_split(
        finished: tuple[Path, Path, Path]) -> None:
    _, results, _ = finished
    recorded = json.loads((results / "results.json").read_text())
    assert sorted(recorded["runs"]) == [
        "realnvp/adversarial/seed0", "realnvp/energy_over_adversarial/seed0",
        "realnvp/energy_over_ml/seed0", "realnvp/ml_continued/seed0", "realnvp/start"]
    arm = recorded["runs"]["realnvp/ml_continued/seed0"]
    assert 2.0 <= arm["trained"]["train_seconds"] < 10.0  # stopped on its budget
    assert arm["trained"]["passes_per_image"] > 0 and arm["trained"]["curve"]
    energy = recorded["runs"]["realnvp/energy_over_adversarial/seed0"]["evaluation"]["0"]
    labels = [row["label"] for row in energy["rows"]]
    assert labels == ["SIR M=2", "IMH M=2", "MALA K=2"]
    assert all(row["fid"] > 0 and row["seconds_per_sample"] > 0 for row in energy["rows"])
    assert isinstance(energy["log_z_reliable"], bool) and energy["ebm_bpd"] > 0
    for name in ("table.md", "curves_realnvp.png", "samples/realnvp_ml_continued.png",
                 "samples/realnvp_energy_over_ml.png"):
        assert (results / name).is_file(), name
    table = (results / "table.md").read_text()
    assert "(c) EBM over (b) | SIR M=2 |" in table and "biased low" in table


def test_a_finished_study_trains_nothing_again_and_a_missing_run_is_redone(
        finished: tuple[Path, Path, Path]) -> None:
    study, results, runs = finished
    path = results / "results.json"
    before = sorted(runs.glob("*/version_*"))
    assert main(["--study", str(study), "--results-dir", str(results),
                 "--output-dir", str(runs)]) == 0
    assert sorted(runs.glob("*/version_*")) == before
    recorded = json.loads(path.read_text())
    del recorded["runs"]["realnvp/energy_over_ml/seed0"]
    path.write_text(json.dumps(recorded))
    shutil.rmtree(runs / "realnvp_start")  # a new session: the start is kept beside the results
    assert (results / "start_realnvp.pt").is_file()
    assert main(["--study", str(study), "--results-dir", str(results),
                 "--output-dir", str(runs)]) == 0
    new = sorted(set(runs.glob("*/version_*")) - set(before))
    assert [p.parent.name for p in new] == ["realnvp_energy_over_ml_seed0"]
    assert "realnvp/energy_over_ml/seed0" in json.loads(path.read_text())["runs"]


def test_results_of_another_study_file_are_refused(finished: tuple[Path, Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    study, results, runs = finished
    changed = json.loads(study.read_text()) | {"budget_seconds": 3.0}
    other = study.with_name("other.yaml")
    other.write_text(json.dumps(changed))
    assert main(["--study", str(other), "--results-dir", str(results), "--render-only"]) == 2
    assert "holds the results of a different study file" in capsys.readouterr().err


def test_bad_study_files_are_one_line_errors(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    for text, words in (("name: x\ndata: mnist5k\nbudget_seconds: 1\nbudget: 3\n",
                         "unknown key 'budget'"),
                        ("name: x\ndata: svhn\nbudget_seconds: 1\n", "'bad.yaml: data'"),
                        ("name: x\ndata: mnist5k\nbudget_seconds: -1\n", "budget_seconds")):
        bad.write_text(text)
        assert main(["--study", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert main(["--study", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_readme_block_is_rewritten_from_the_results(finished: tuple[Path, Path, Path],
                                                        tmp_path: Path) -> None:
    _, results, _ = finished
    recorded = json.loads((results / "results.json").read_text())
    begin, end = markers("tiny")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{begin}\nstale\n{end}\nafter\n")
    write_readme_block(readme, "tiny", recorded)
    assert block_in(readme.read_text(), "tiny") == readme_block(recorded)
    assert readme.read_text().endswith("after\n") and "stale" not in readme.read_text()
    assert "(b) adversarial generator, generator T=1" in readme_block(recorded)


def test_beats_needs_a_gap_beyond_the_summed_spreads() -> None:
    assert beats({"mean": 10.0, "std": 1.0}, {"mean": 13.0, "std": 1.0}) == "lower"
    assert beats({"mean": 10.0, "std": 1.0}, {"mean": 11.5, "std": 1.0}) == (
        "no difference beyond the spread")
    assert beats({"mean": 14.0, "std": 0.5}, {"mean": 10.0, "std": 1.0}) == "higher"


@pytest.mark.parametrize("results", sorted(REPO.glob("benchmarks/results/study_*/results.json")))
def test_the_readme_and_table_say_what_the_committed_results_hold(results: Path) -> None:
    recorded = json.loads(results.read_text())
    name = recorded["study"]["name"]
    assert load_study(REPO / "lit_ebm" / "studies" / f"{name}.yaml").name == name
    assert (results.parent / "table.md").read_text() == render_table(recorded)
    assert block_in((REPO / "README.md").read_text(), name) == readme_block(recorded)
