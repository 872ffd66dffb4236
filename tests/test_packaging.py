"""What an installed package needs beside its code: the bundled mnist5k with its README, read
from the package whatever the working directory, and a wheel that holds it, LICENSE and every
shipped config."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lit_ebm
from lit_ebm.config import DataConfig
from lit_ebm.data import build_datamodule
from lit_ebm.image_files import default_root

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(lit_ebm.__file__).resolve().parent
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE")  # with lit_ebm/, all a wheel reads


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _readme_sha256() -> str:
    match = re.search(r"sha256: ([0-9a-f]{64})", (PACKAGE / "bundled" / "README.md").read_text())
    assert match is not None
    return match.group(1)


def test_mnist5k_is_read_from_the_package_whatever_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_root("mnist5k") == PACKAGE / "bundled"
    module = build_datamodule(DataConfig(name="mnist5k"), dequantise=True)
    assert module.root == PACKAGE / "bundled"
    module.setup("fit")
    assert (len(module.train_set), len(module.val_set)) == (4000, 500)
    assert _sha256((module.root / "mnist_5k.npz").read_bytes()) == _readme_sha256()


def test_other_data_sets_default_to_data_under_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("mnist", "cifar10"):
        assert build_datamodule(DataConfig(name=name), dequantise=True).root == tmp_path / "data"


@pytest.mark.slow
def test_the_wheel_holds_the_data_its_readme_the_licence_and_every_config(
        tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: no stale build/ folder of the checkout gets in
    shutil.copytree(PACKAGE, source / "lit_ebm",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in WHEEL_SOURCES:
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("lit_ebm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        npz = archive.read("lit_ebm/bundled/mnist_5k.npz")
        readme = archive.read("lit_ebm/bundled/README.md").decode()
        licence = archive.read(next(n for n in names if n.endswith("licenses/LICENSE")))
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    assert _sha256(npz) == _readme_sha256() and "CC BY-SA 3.0" in readme
    assert licence == (REPO / "LICENSE").read_bytes()
    configs = {f"lit_ebm/{p.relative_to(PACKAGE).as_posix()}"
               for p in (PACKAGE / "configs").rglob("*.yaml")}
    assert {"lit_ebm/configs/quickstart.yaml", "lit_ebm/configs/data/mnist5k.yaml"} <= configs
    assert configs <= names
    assert "lit_ebm/py.typed" in names  # PEP 561: the hints are part of the interface
    assert {f"lit_ebm/studies/{p.name}" for p in (PACKAGE / "studies").glob("*.yaml")} <= names
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"lit_ebm", dist_info}  # no configs/ beside it
    for script in ("lit-ebm-fit = lit_ebm.fit:main", "lit-ebm-evaluate = lit_ebm.evaluate:main",
                   "lit-ebm-sample = lit_ebm.sample:main"):
        assert script in entry_points.decode()
