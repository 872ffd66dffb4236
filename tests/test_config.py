"""The CLI's configuration contract: merging, overrides, and errors that exit with code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_ebm.config import Config, load_config, to_container, to_yaml
from lit_ebm.errors import ConfigError
from lit_ebm.fit import main

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_files_merge_left_to_right_then_overrides(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("name: first\ndata:\n  batch_size: 8\n  num_workers: 1\n")
    second.write_text("data:\n  batch_size: 16\n")
    cfg = load_config([str(first), str(second)], ["data.num_workers=3"])
    assert (cfg.name, cfg.data.batch_size, cfg.data.num_workers) == ("first", 16, 3)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    cfg = load_config([str(path)])
    assert isinstance(cfg, Config)


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_unknown_key_names_it_and_the_closest_keys(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "data.batch_sise=3")
    assert "unknown config key 'data.batch_sise'" in err
    assert "data.batch_size" in err


def test_unknown_nested_key_in_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  generator:\n    realnvp:\n      num_block: 2\n")
    err = _error(capsys, "--config", str(config))
    assert "'model.generator.realnvp.num_block'" in err
    assert "model.generator.realnvp.num_blocks" in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=abc", "expected an integer"),
        ("data.download=maybe", "expected true or false"),
        ("model.generator_optim.grad_clip_norm=big", "expected a number or null"),
        ("data.batch_size=0", "expected a positive number"),
        ("data.name=imagenet", "expected one of mnist5k, mnist, fashion_mnist, cifar10, toy2d"),
        ("model.energy_optim.betas=[0.5,1.5]", "expected two numbers in [0, 1)"),
    ],
)
def test_wrong_value_names_key_value_and_expectation(
    override: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key, value = override.split("=", 1)
    err = _error(capsys, override)
    assert f"'{key}'" in err
    assert value.strip("[]").split(",")[0] in err
    assert expected in err


def test_incompatible_generator_and_data(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "data.name=toy2d")
    assert "'model.generator.name'" in err and "realnvp2d or mixture2d" in err


def test_missing_config_file_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, "--config", "no/such/file.yaml")
    assert "config file not found: 'no/such/file.yaml'" in err


def test_malformed_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert "is not of the form key=value" in _error(capsys, "data.batch_size")


def test_print_config_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(REPO / "configs/quickstart.yaml"), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "quickstart"
    assert set(printed) >= {"data", "model", "trainer", "eval", "output_dir", "ckpt_path"}
    assert printed["model"]["generator"]["pixelcnn"]["channels"] == 32


def test_an_override_of_an_unused_section_is_accepted_with_a_warning(
        capsys: pytest.CaptureFixture[str]) -> None:
    quickstart = str(REPO / "configs/quickstart.yaml")  # a PixelCNN trained by ML
    unused = ["model.generator.realnvp.num_scales=3", "model.energy.conv.channels=8"]
    assert main(["--config", quickstart, "--print-config", *unused,
                 "model.generator.pixelcnn.channels=16"]) == 0
    out, err = capsys.readouterr()
    warnings = err.splitlines()
    assert warnings == [
        "warning: override 'model.generator.realnvp.num_scales=3' changes nothing: "
        "model.generator.name is pixelcnn; add model.generator.name=realnvp if you meant it",
        "warning: override 'model.energy.conv.channels=8' changes nothing: a maximum-likelihood "
        "run (model.objective=mle) has no energy"]
    assert yaml.safe_load(out)["model"]["generator"]["pixelcnn"]["channels"] == 16


@pytest.mark.slow
def test_process_exit_code() -> None:
    bad = subprocess.run([sys.executable, "-m", "lit_ebm.fit", "data.nme=x"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert "data.name" in bad.stderr and "Traceback" not in bad.stderr


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "--config FILE" in shown and "--print-config" in shown


def test_config_round_trips_through_its_yaml(tmp_path: Path) -> None:
    cfg = load_config([], ["model.n_critic=3", "model.energy_optim.lr=0.002"])
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg))
    assert load_config([str(saved)]) == cfg
    plain = to_container(cfg.model)
    assert isinstance(plain, dict) and plain["n_critic"] == 3
    saved.write_text(yaml.safe_dump({"model": {**plain, "n_critics": 2}}))
    with pytest.raises(ConfigError, match="unknown config key 'model.n_critics'"):
        load_config([str(saved)])


def test_defaults_are_merged_first_and_the_file_wins(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "data.yaml").write_text("data:\n  batch_size: 8\n  num_workers: 2\n")
    child = tmp_path / "run.yaml"
    child.write_text("defaults: [base/data.yaml]\nname: child\ndata:\n  batch_size: 16\n")
    cfg = load_config([str(child)])
    assert (cfg.name, cfg.data.batch_size, cfg.data.num_workers) == ("child", 16, 2)
    child.write_text("defaults: [run.yaml]\nname: loop\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config([str(child)])
    child.write_text("defaults: base/data.yaml\n")
    with pytest.raises(ConfigError, match="must be a list of YAML files"):
        load_config([str(child)])
