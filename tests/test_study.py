"""The study runner on a tiny study (seconds): it trains the ML start and every arm, measures
each on the test split, writes results.json, table.md, curves and grids, resumes without
training again what it holds, and the README's study blocks are what the results render."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lit_ebm.config import load_config
from lit_ebm.study.__main__ import main
from lit_ebm.study.readme import block_in, markers, write_readme_block
from lit_ebm.study.report import beats, readme_block, render_table, verdicts
from lit_ebm.study.runs import run_overrides
from lit_ebm.study.spec import load_study
from tests.notebooks import run_notebook
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


def tiny_ablation(folder: Path) -> Path:
    """A tiny ablation on the validation split: (a), (b) and two rows, one a change of (b),
    one a config of its own; no energy arm, so no energy config."""
    study = json.loads(tiny_study(folder).read_text())
    study |= {"name": "tiny_ablation", "arms": ["ml_continued", "adversarial"]}
    study["evaluation"] |= {"split": "val"}
    runs = study["generators"]["realnvp"]
    del runs["energy"]
    runs["ablations"] = {
        "no_zero_init": {"overrides": ["model.energy.conv.zero_init=false"]},
        "ml_at_adversarial_lr": {"config": "mnist5k_realnvp_mle",
                                 "overrides": [*ARM, "model.generator_optim.lr=1.0e-4"]}}
    path = folder / "tiny_ablation.yaml"
    path.write_text(json.dumps(study))
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


def test_an_ablation_trains_its_rows_for_the_adversarial_arms_budget(tmp_path: Path) -> None:
    study, results = tiny_ablation(tmp_path), tmp_path / "results"
    assert main(["--study", str(study), "--results-dir", str(results),
                 "--output-dir", str(tmp_path / "runs")]) == 0
    recorded = json.loads((results / "results.json").read_text())
    assert sorted(recorded["runs"]) == [
        "realnvp/adversarial/seed0", "realnvp/ml_at_adversarial_lr/seed0",
        "realnvp/ml_continued/seed0", "realnvp/no_zero_init/seed0", "realnvp/start"]
    for row in ("adversarial", "no_zero_init", "ml_at_adversarial_lr"):
        run = recorded["runs"][f"realnvp/{row}/seed0"]
        assert 2.0 <= run["trained"]["train_seconds"] < 10.0  # no (c): (b) has the whole budget
    row = OmegaConf.load(tmp_path / "runs" / "realnvp_no_zero_init_seed0" / "version_0" /
                         "config.yaml")
    assert row.model.energy.conv.zero_init is False and row.model.generator_objective == "hybrid"
    table = (results / "table.md").read_text()
    assert "measured on the val split" in table and "### realnvp: ablation of (b)" in table
    assert "| no_zero_init | model.energy.conv.zero_init=false |" in table
    assert "| ml_at_adversarial_lr | config mnist5k_realnvp_mle " in table
    assert "for each arm and ablation row" in table


def test_results_recorded_before_a_setting_existed_are_still_this_studys(
        finished: tuple[Path, Path, Path], tmp_path: Path) -> None:
    study, results, _ = finished
    recorded = json.loads((results / "results.json").read_text())
    del recorded["study"]["arms"]
    del recorded["study"]["generators"]["realnvp"]["ablations"]
    older = tmp_path / "older"
    older.mkdir()
    (older / "results.json").write_text(json.dumps(recorded))
    assert main(["--study", str(study), "--results-dir", str(older), "--render-only"]) == 0
    assert (older / "table.md").read_text() == (results / "table.md").read_text()


def test_results_of_another_study_file_are_refused(finished: tuple[Path, Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    study, results, runs = finished
    changed = json.loads(study.read_text()) | {"budget_seconds": 3.0}
    other = study.with_name("other.yaml")
    other.write_text(json.dumps(changed))
    assert main(["--study", str(other), "--results-dir", str(results), "--render-only"]) == 2
    assert "holds the results of a different study file" in capsys.readouterr().err


GENERATOR = ("name: x\ndata: mnist5k\nbudget_seconds: 1\ngenerators:\n  realnvp:\n"
             "    start: {config: mnist5k_realnvp_mle}\n    adversarial: {config: "
             "mnist5k_realnvp_hybrid}\n")


def test_bad_study_files_are_one_line_errors(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    for text, words in (("name: x\ndata: mnist5k\nbudget_seconds: 1\nbudget: 3\n",
                         "unknown key 'budget'"),
                        ("name: x\ndata: svhn\nbudget_seconds: 1\n", "'bad.yaml: data'"),
                        ("name: x\ndata: mnist5k\nbudget_seconds: -1\n", "budget_seconds"),
                        (f"{GENERATOR}arms: [ml_continued, bogus]\n", "arms are distinct names"),
                        (f"{GENERATOR}arms: [energy_over_adversarial]\n", "add adversarial"),
                        (f"{GENERATOR}arms: [energy_over_ml]\n",
                         "needs generators.realnvp.energy"),
                        (f"{GENERATOR}    ablations: {{ml_continued: {{}}}}\narms: [adversarial]\n",
                         "take the name of an arm")):
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


@pytest.mark.slow
def test_the_study_notebook_reads_a_results_folder(finished: tuple[Path, Path, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, results, _ = finished
    monkeypatch.setenv("LIT_EBM_NOTEBOOK_STUDY", str(results))
    text = run_notebook("adversarial_vs_mle.ipynb")
    assert "study tiny on mnist5k: training seeds [0], 2 s per arm, measured on the test" in text
    recorded = json.loads((results / "results.json").read_text())
    for line in verdicts(recorded, "realnvp"):
        assert f"realnvp: {line}" in text
    assert re.search(r"realnvp energy_over_ml: [\d.]+ ± 0\.0000 bits/dim over 1 training "
                     r"seeds \([01]/1 reliable\)", text)
    assert text.count("<IPython.core.display.Image object>") == 1 + 5  # curves and 5 grids


def test_beats_needs_a_gap_beyond_the_summed_spreads() -> None:
    assert beats({"mean": 10.0, "std": 1.0}, {"mean": 13.0, "std": 1.0}) == "lower"
    assert beats({"mean": 10.0, "std": 1.0}, {"mean": 11.5, "std": 1.0}) == (
        "no difference beyond the spread")
    assert beats({"mean": 14.0, "std": 0.5}, {"mean": 10.0, "std": 1.0}) == "higher"
    one_seed = {"mean": 10.0, "std": 0.0, "n": 1}
    assert beats(one_seed, {"mean": 20.0, "std": 0.0, "n": 3}) == "no verdict on one training seed"


@pytest.mark.parametrize("path", sorted((REPO / "lit_ebm" / "studies").glob("*.yaml")),
                         ids=lambda path: path.stem)
def test_every_run_of_a_shipped_study_composes(path: Path, tmp_path: Path) -> None:
    """Each config a shipped study trains, with every override the runner adds, loads."""
    study = load_study(path)
    assert study.name == path.stem
    for runs in study.generators.values():
        for row in ("start", *study.arms, *runs.ablations):
            spec = runs.start if row == "start" else runs.spec(row)
            cfg = load_config([spec.config], [*run_overrides(study, row, 0, tmp_path),
                                              *study.overrides, *spec.overrides])
            assert cfg.data.name == study.data and cfg.seed == 0


@pytest.mark.parametrize("results", sorted(REPO.glob("benchmarks/results/study_*/results.json")))
def test_the_readme_and_table_say_what_the_committed_results_hold(results: Path) -> None:
    recorded = json.loads(results.read_text())
    name = recorded["study"]["name"]
    assert load_study(REPO / "lit_ebm" / "studies" / f"{name}.yaml").name == name
    assert (results.parent / "table.md").read_text() == render_table(recorded)
    assert block_in((REPO / "README.md").read_text(), name) == readme_block(recorded)
