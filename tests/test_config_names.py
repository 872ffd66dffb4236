"""``--config`` takes a path or the name of a config shipped in the package, from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import lit_ebm
from lit_ebm.config import load_config
from lit_ebm.config.loading import resolve_config
from lit_ebm.errors import ConfigError
from lit_ebm.fit import main

REPO = Path(__file__).resolve().parent.parent
SHIPPED = Path(lit_ebm.__file__).resolve().parent / "configs"
NAMES = sorted(p.relative_to(SHIPPED).with_suffix("").as_posix() for p in SHIPPED.rglob("*.yaml"))


def test_the_configs_ship_inside_the_package_and_the_checkout_links_to_them() -> None:
    assert {"quickstart", "mnist5k_realnvp_mle", "mnist5k_pixelcnn_mle", "data/mnist5k",
            "objective/mle"} <= set(NAMES)
    assert (REPO / "configs").resolve() == SHIPPED


@pytest.mark.parametrize("name", [n for n in NAMES if "/" not in n])
def test_every_experiment_config_names_its_runs_after_its_file(name: str) -> None:
    assert load_config([name], []).name == name


@pytest.mark.parametrize("name", ["quickstart", "quickstart.yaml", "mnist5k_pixelcnn_mle",
                                  "data/mnist5k"])
def test_a_name_resolves_to_the_shipped_file_from_any_folder(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = resolve_config(name)
    assert resolved.resolve() == SHIPPED / f"{name.removesuffix('.yaml')}.yaml"


def test_a_shipped_config_by_name_merges_its_defaults_from_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_path = load_config([str(REPO / "configs" / "quickstart.yaml")], ["trainer.max_epochs=1"])
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["quickstart"], ["trainer.max_epochs=1"])
    assert cfg == by_path
    # from data/mnist5k.yaml, generator/pixelcnn_small.yaml and objective/mle.yaml, and its own
    assert (cfg.name, cfg.data.name, cfg.data.batch_size) == ("quickstart", "mnist5k", 8)
    assert (cfg.model.generator.name, cfg.model.generator.pixelcnn.channels) == ("pixelcnn", 32)
    assert (cfg.model.objective, cfg.model.generator_optim.grad_clip_norm) == ("mle", 100.0)
    assert load_config(["data/mnist5k", "objective/adversarial"]).model.objective == "adversarial"


def test_an_existing_path_wins_over_a_shipped_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "quickstart").write_text("name: mine\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_config("quickstart") == Path("quickstart")
    assert load_config(["quickstart"]).name == "mine"


def test_an_unknown_name_is_one_line_listing_every_shipped_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # configs/quickstart.yaml is a path only in the checkout
    for wrong in ("quikstart", "configs/quickstart.yaml", "data/mnist6k"):
        assert main(["--config", wrong, "--print-config"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"config file not found: '{wrong}'" in err
        listed = err.rsplit("one of ", 1)[1].strip().split(", ")
        assert listed == sorted(NAMES, key=lambda n: (n.count("/"), n))


def test_defaults_are_paths_relative_to_their_file_never_names(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("defaults: [quickstart.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(tmp_path / "run.yaml")])
    assert f"config file not found: '{tmp_path / 'quickstart.yaml'}'" in str(err.value)
