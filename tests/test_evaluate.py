"""``python -m lit_ebm.evaluate`` on tiny checkpoints: the three output files, agreement with
training's own figures, determinism, SIR at one candidate, and one-line errors for bad input;
the library it runs on (settings in, typed results out); and FID/KID logged during training."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from lit_ebm import evaluation
from lit_ebm.config import DataConfig
from lit_ebm.data import build_datamodule
from lit_ebm.errors import ConfigError
from lit_ebm.evaluate import main as evaluate
from lit_ebm.evaluation import EvaluationResults, EvaluationSettings, Row, SampleMetrics
from lit_ebm.fit import main as fit
from lit_ebm.generators import RealNVP, bits_per_dim
from lit_ebm.modules import AdversarialEBM, MaximumLikelihood, load_module
from tests.tiny import TINY_IMAGE_RUN, logged_rows

pytestmark = pytest.mark.slow

EVAL_IN_TRAINING = ["eval.every_n_epochs=1", "eval.num_samples=150", "eval.kid_subset_size=100"]
SMALL = ["--num-samples", "150", "--kid-subset-size", "100", "--candidates", "2",
         "--mcmc-steps", "5", "--mcmc-burn-in", "5"]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def evaluated(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "both"
    argv = ["--ckpt", str(checkpoints["ml"]), str(checkpoints["adversarial"]), "--out",
            str(out), *SMALL]
    assert evaluate(argv) == 0
    return out


def test_results_hold_every_figure_for_every_row(evaluated: Path) -> None:
    results = _results(evaluated)
    assert results["features"] == "mnist_cnn" and results["data"] == "mnist5k"
    assert results["num_real"] == 500 and results["num_samples"] == 150
    assert results["reference"] == "validation split"
    rows = results["rows"]
    assert [row["label"] for row in rows][:4] == ["real: training split", "ml/version_0",
                                                  "adv/version_0", "adv/version_0 EBM (SIR, M=2)"]
    assert rows[4]["label"].startswith("adv/version_0 EBM (IMH, M=2, acceptance 0.")
    assert rows[5]["label"].startswith("adv/version_0 EBM (MALA, 5 steps after 5, acceptance ")
    assert [row["kind"] for row in rows] == ["real", "generator", "generator", "ebm_resampled",
                                             "ebm_chain", "ebm_chain"]
    for row in rows:
        for metric in ("fid", "kid_mean", "kid_std", "precision", "recall", "density",
                       "coverage"):
            assert torch.isfinite(torch.tensor(row[f"{metric}_mnist_cnn"])), (row["label"],
                                                                               metric)
        assert row["num_samples"] == 150 and "fid" not in row
    real, ml, adversarial, resampled, imh, mala = rows
    assert imh["chain_steps"] == 1 and 0 <= imh["acceptance_rate"] <= 1
    assert mala["chain_steps"] == 5 and mala["chain_burn_in"] == 5
    assert 0 <= mala["acceptance_rate"] <= 1 and mala["step_size"] > 0
    assert mala["seconds_per_sample"] > 0
    assert real["fid_mnist_cnn"] < ml["fid_mnist_cnn"], "real data is the floor"
    assert ml["objective"] == "mle" and adversarial["objective"] == "adversarial"
    assert adversarial["log_z_q_samples"] == 300 and adversarial["log_z_q_stderr"] > 0
    for key in ("ebm_bpd_learned_log_z", "ebm_bpd_is_log_z", "log_z_learned", "log_z_q"):
        assert key in adversarial and key not in ml
    table = (evaluated / "results.md").read_text()
    assert "| real: training split |" in table and "FID (mnist_cnn)" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 7
    sheet = Image.open(evaluated / "samples.png")
    assert sheet.width > 3 * sheet.height


def test_generator_and_ebm_bits_agree_with_the_model(evaluated: Path,
                                                     checkpoints: dict[str, Path]) -> None:
    """bits/dim over the whole validation split, as the models give them directly."""
    rows = {row["label"]: row for row in _results(evaluated)["rows"]}
    data = build_datamodule(DataConfig(name="mnist5k", batch_size=500), dequantise=True)
    data.setup("validate")
    val = next(iter(data.val_dataloader()))
    model = load_module(checkpoints["adversarial"], map_location="cpu").eval()
    ml = load_module(checkpoints["ml"], map_location="cpu").eval()
    assert isinstance(model, AdversarialEBM) and isinstance(ml, MaximumLikelihood)
    with torch.no_grad():
        assert rows["ml/version_0"]["bpd"] == pytest.approx(
            float(ml.generator.bits_per_dim(val).mean()), rel=1e-5)
        assert rows["adv/version_0"]["bpd"] == pytest.approx(
            float(model.generator.bits_per_dim(val).mean()), rel=1e-5)
        ebm_bits = bits_per_dim(model.score(val)["log_prob"], 784, discrete=False).mean()
    adversarial = rows["adv/version_0"]
    assert adversarial["ebm_bpd_learned_log_z"] == pytest.approx(float(ebm_bits), rel=1e-5)
    assert adversarial["log_z_learned"] == pytest.approx(float(model.log_z.detach()))
    shift = adversarial["log_z_q"] - adversarial["log_z_learned"]
    assert adversarial["ebm_bpd_is_log_z"] - adversarial["ebm_bpd_learned_log_z"] == (
        pytest.approx(shift / (784 * math.log(2)), rel=1e-5, abs=1e-9))


def _figures(results: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("seconds")}
            for row in results["rows"]]


def test_same_seed_same_figures_and_one_candidate_resamples_the_generator(
        evaluated: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again"
    argv = ["--ckpt", str(checkpoints["ml"]), str(checkpoints["adversarial"]), "--out",
            str(again), *SMALL]
    assert evaluate(argv) == 0
    assert _figures(_results(again)) == _figures(_results(evaluated))
    one = tmp_path / "one"
    assert evaluate(["--ckpt", str(checkpoints["adversarial"]), "--out", str(one), *SMALL[:4],
                     "--candidates", "1", "--mcmc-steps", "0", "--seed", "5"]) == 0
    _, generator, resampled = _results(one)["rows"]
    assert resampled["fid_mnist_cnn"] == generator["fid_mnist_cnn"]
    assert generator["fid_mnist_cnn"] != _results(evaluated)["rows"][2]["fid_mnist_cnn"]


def _not_lit_ebm(tmp: Path, checkpoints: dict[str, Path]) -> list[str]:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"lr": 0.1}},
               tmp / "other.ckpt")
    return ["--ckpt", str(tmp / "other.ckpt")]


def _other_data(tmp: Path, checkpoints: dict[str, Path]) -> list[str]:
    checkpoint = torch.load(checkpoints["ml"], weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["data"]["name"] = "fashion_mnist"
    torch.save(checkpoint, tmp / "fashion.ckpt")
    return ["--ckpt", str(checkpoints["ml"]), str(tmp / "fashion.ckpt")]


def _garbage(tmp: Path, checkpoints: dict[str, Path]) -> list[str]:
    (tmp / "garbage.ckpt").write_bytes(b"\x80not a checkpoint" * 100)
    return ["--ckpt", str(tmp / "garbage.ckpt")]


def _nan_weights(tmp: Path, checkpoints: dict[str, Path]) -> list[str]:
    checkpoint = torch.load(checkpoints["ml"], weights_only=True)
    name = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], math.nan)
    torch.save(checkpoint, tmp / "diverged.ckpt")
    return ["--ckpt", str(tmp / "diverged.ckpt")]


def _args(*args: str):
    return lambda tmp, checkpoints: [a.format(**checkpoints) for a in args]


BAD = {
    "missing-file": (_args("--ckpt", "/nonexistent/last.ckpt"), "does not exist"),
    "unreadable-file": (_garbage, "truncated or corrupted"),
    "non-finite-weights": (_nan_weights, "diverged.ckpt' holds non-finite weights"),
    "not-a-lit-ebm-checkpoint": (_not_lit_ebm, "not a lit_ebm checkpoint"),
    "different-data-sets": (_other_data, "different data sets"),
    "fewer-samples-than-features": (_args("--ckpt", "{ml}", "--num-samples", "100",
                                          "--kid-subset-size", "50"), "--num-samples>=129"),
    "fewer-samples-than-kid-subset": (_args("--ckpt", "{ml}", "--num-samples", "150"),
                                      "--kid-subset-size<=150"),
    "more-samples-than-training-images": (_args("--ckpt", "{ml}", "--num-samples", "5000"),
                                          "--num-samples<=4000"),
    "no-candidates": (_args("--ckpt", "{ml}", "--candidates", "0"), "--candidates"),
    "no-samples": (_args("--ckpt", "{ml}", "--num-samples", "0"),
                   "invalid value 0 for '--num-samples': expected a positive number"),
    "unknown-data-set": (_args("--ckpt", "{ml}", "--data", "toy2d"), "'--data'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2(case: str, checkpoints: dict[str, Path], tmp_path: Path,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    make_args, expected = BAD[case]
    out = tmp_path / "out"
    assert evaluate([*make_args(tmp_path, checkpoints), "--out", str(out)]) == 2
    stdout, stderr = capfd.readouterr()
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0]
    assert not (out / "results.json").exists()


def test_the_library_takes_settings_and_returns_the_typed_rows_of_results_json(
        evaluated: Path, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """No command line: settings in, typed results out, the same figures as results.json; the
    report is written only when asked for."""
    settings = EvaluationSettings(checkpoints=[checkpoints["ml"]], num_samples=150,
                                  kid_subset_size=100, candidates=2)
    results = evaluation.evaluate(settings)
    assert isinstance(results, EvaluationResults) and results.kid_subset_size == 100
    assert results.command.startswith("python -m lit_ebm.evaluate --ckpt ")
    real, ml = results.rows
    assert all(isinstance(row, Row) and isinstance(row.metrics, SampleMetrics)
               for row in results.rows)
    assert (real.kind, ml.kind, ml.objective, ml.generator) == ("real", "generator", "mle",
                                                                "realnvp")
    assert ml.images.dtype == torch.uint8 and len(ml.images) == 150
    assert ml.ebm_bpd_learned_log_z is None and ml.log_z_q is None
    written = _results(evaluated)
    assert ml.metrics.fid == written["rows"][1]["fid_mnist_cnn"]
    assert _figures(results.to_dict())[:2] == _figures(written)[:2]
    assert not (tmp_path / "lib").exists()
    paths = evaluation.write_report(results, tmp_path / "lib")
    assert [path.name for path in paths] == ["results.json", "results.md", "samples.png"]
    assert _results(tmp_path / "lib") == json.loads(json.dumps(results.to_dict()))
    assert (tmp_path / "lib" / "results.md").read_text() == evaluation.markdown_table(results)


def test_temperature_rows_sample_the_generator_at_each_temperature(
        checkpoints: dict[str, Path]) -> None:
    """A row per temperature besides 1 for every checkpoint; near T = 0 a flow draws images
    close to the latent mode's, so they vary far less than at T = 1."""
    settings = EvaluationSettings(checkpoints=[checkpoints["ml"], checkpoints["adversarial"]],
                                  num_samples=150, kid_subset_size=100, candidates=2,
                                  mcmc_steps=0, temperatures=[1.0, 0.05])
    rows = {row.label: row for row in evaluation.evaluate(settings).rows}
    cold, warm = rows["ml/version_0 at T=0.05"], rows["ml/version_0"]
    assert (cold.kind, cold.objective, cold.temperature, cold.bpd) == ("generator", "mle", 0.05,
                                                                       None)
    assert warm.temperature is None and len(cold.images) == 150
    assert cold.images.float().std(0).mean() < 0.2 * warm.images.float().std(0).mean()
    assert rows["adv/version_0 at T=0.05"].objective == "adversarial"
    assert [label for label in rows if "T=" in label] == ["ml/version_0 at T=0.05",
                                                          "adv/version_0 at T=0.05"]


def test_annealed_importance_sampling_gives_the_ebm_bits_when_asked(
        checkpoints: dict[str, Path]) -> None:
    """``log_z_annealing`` K: the EBM's log Z by annealed importance sampling, one chain per
    sample, and the EBM bits/dim under it."""
    settings = EvaluationSettings(checkpoints=[checkpoints["adversarial"]], num_samples=150,
                                  kid_subset_size=100, candidates=2, mcmc_steps=0,
                                  log_z_annealing=3)
    ebm = evaluation.evaluate(settings).rows[1]
    assert ebm.log_z_q_samples == 150 and ebm.log_z_proposal is not None
    assert re.fullmatch(r"annealed, 3 temperatures, MALA step size [\d.e-]+, acceptance [01]\.\d\d",
                        ebm.log_z_proposal)
    assert ebm.log_z_q is not None and math.isfinite(ebm.log_z_q)
    module = load_module(checkpoints["adversarial"]).eval()
    assert ebm.ebm_bpd_is_log_z is not None and ebm.ebm_bpd_learned_log_z is not None
    # the two EBM bits/dim differ only by their log Z, in bits per dimension
    shift = (ebm.log_z_q - float(module.log_z)) / (module.generator.num_dims * math.log(2))
    assert ebm.ebm_bpd_is_log_z == pytest.approx(ebm.ebm_bpd_learned_log_z + shift, abs=1e-6)


def test_only_maximum_likelihood_runs_keep_a_best_checkpoint(
        checkpoints: dict[str, Path]) -> None:
    """An adversarial run's generator bits/dim is meant to rise: no best-by-val/bpd file."""
    assert sorted(p.name for p in checkpoints["adversarial"].parent.iterdir()) == ["last.ckpt"]
    assert any(p.name.startswith("best-epoch") for p in checkpoints["ml"].parent.iterdir())


@pytest.mark.parametrize(("change", "flag"), [
    ({"temperatures": [0.9, -1.0]}, "--temperatures"),
    ({"batch_size": 0}, "--batch-size"), ({"kid_subset_size": -3}, "--kid-subset-size"),
    ({"log_z_annealing": -1}, "--log-z-annealing"),
    ({"checkpoints": []}, "--ckpt"), ({"device": "nonsense"}, "--device")])
def test_a_bad_setting_names_its_flag(change: dict, flag: str, checkpoints: dict[str, Path],
                                      tmp_path: Path) -> None:
    settings = EvaluationSettings(**{"checkpoints": [checkpoints["ml"]], "out": tmp_path / "out",
                                     **change})
    with pytest.raises(ConfigError, match=rf"^invalid value .* for '{flag}': expected "):
        evaluation.evaluate(settings)
    assert not (tmp_path / "out").exists()


def test_fid_and_kid_are_logged_during_training_and_leave_training_unchanged(
        tmp_path: Path) -> None:
    common = [*TINY_IMAGE_RUN, f"output_dir={tmp_path}", "trainer.max_epochs=3"]
    assert fit([*common, "name=eval", *EVAL_IN_TRAINING, "eval.every_n_epochs=2"]) == 0
    assert fit([*common, "name=plain"]) == 0
    run = tmp_path / "eval" / "version_0"
    rows = logged_rows(run)
    logged = {row["epoch"]: (float(row["val/fid_mnist_cnn"]), float(row["val/kid_mnist_cnn"]))
              for row in rows if row.get("val/fid_mnist_cnn")}
    assert sorted(logged) == ["1", "2"], "every 2 epochs, and after the last"
    assert all(fid > 0 and torch.isfinite(torch.tensor(kid)) for fid, kid in logged.values())
    with_eval = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    without = torch.load(tmp_path / "plain" / "version_0" / "checkpoints" / "last.ckpt",
                         weights_only=True)["state_dict"]
    assert with_eval.keys() == without.keys(), "the feature network stays out of checkpoints"
    assert all(torch.equal(with_eval[k], without[k]) for k in with_eval)


def test_non_finite_samples_are_one_line_naming_the_checkpoint(
        checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    def nan_sample(self: RealNVP, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((num_samples, 1, 28, 28), math.nan), torch.zeros(num_samples)

    monkeypatch.setattr(RealNVP, "sample", nan_sample)
    assert evaluate(["--ckpt", str(checkpoints["ml"]), "--out", str(tmp_path / "o"),
                     *SMALL]) == 2
    stdout, stderr = capfd.readouterr()
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "last.ckpt'" in lines[0] and "NaN or infinite" in lines[0], lines
