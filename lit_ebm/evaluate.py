"""Evaluate checkpoints: ``python -m lit_ebm.evaluate --ckpt A.ckpt [B.ckpt ...] --out DIR``.

For every checkpoint (``MaximumLikelihood`` or ``AdversarialEBM``, image data), on fixed
features (:mod:`lit_ebm.features`) against the validation split (DESIGN.md section 7):

- the generator: FID, KID (mean and std over subsets), precision, recall, density and
  coverage of ``--num-samples`` samples, and its bits/dim on the validation split;
- for an ``AdversarialEBM``, also the EBM itself: its bits/dim from log p(x) = -E(x) - log Z
  with the learned log Z and with a fresh importance-sampling estimate (proposal q alone, with
  its standard error), and the same sample metrics for EBM samples drawn by
  sampling-importance-resampling from ``--candidates`` generator samples each. The
  ``num_samples x candidates`` draws serve all three: the first candidate of each group is the
  generator's sample, the resampled one the EBM's, and all of them estimate log Z.

A real-versus-real row (as many training images against the same validation split) gives
the floor of every figure. Writes ``DIR/results.json``, ``DIR/results.md`` (one table) and
``DIR/samples.png`` (labelled grids side by side). Deterministic for a given ``--seed``. Exit
codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid
from tqdm import tqdm

from lit_ebm.checkpoints import read_checkpoint
from lit_ebm.config import ConfigError, DataConfig
from lit_ebm.data import ImageDataModule, LabelledImages
from lit_ebm.features import WEIGHTS_DIR, build_feature_extractor
from lit_ebm.generators import bits_per_dim, to_levels
from lit_ebm.metrics import (
    log_partition_proposal,
    precision_recall_density_coverage,
    sampling_importance_resampling,
)
from lit_ebm.modules import MODULES, AdversarialEBM, GenerativeModule
from lit_ebm.sample_quality import (
    FeatureDistances,
    batches,
    check_sample_counts,
    generated_levels,
    image_features,
)

EXIT_USAGE = 2
KID_SUBSET_SIZE = 1000  # the default, lowered to the validation split's size where smaller
NEAREST_NEIGHBOURS = 5  # k of precision/recall/density/coverage, as in both papers
GRID_IMAGES = 36


@dataclass
class Checkpoint:
    """One checkpoint to evaluate: its module, the data it was trained on, and a label."""

    path: Path
    label: str
    objective: str
    module: GenerativeModule
    data: dict[str, Any]


@dataclass
class Row:
    """One line of the results: a set of images and everything measured on it."""

    label: str
    kind: str  # "real", "generator" or "ebm_resampled"
    levels: Tensor = field(repr=False)
    figures: dict[str, Any]


def run_label(path: Path) -> str:
    """``<name>/version_<n>`` for a run folder's checkpoint (plus the file stem unless it is
    ``last``), else the file stem."""
    parts = path.resolve().parts
    if len(parts) >= 4 and parts[-2] == "checkpoints" and re.fullmatch(r"version_\d+",
                                                                      parts[-3]):
        label = f"{parts[-4]}/{parts[-3]}"
        return label if path.stem == "last" else f"{label}/{path.stem}"
    return path.stem


def _data_config(path: Path, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The data section a checkpoint was trained with: from the checkpoint, else from the run
    folder's config.yaml."""
    saved = (checkpoint.get("datamodule_hyper_parameters") or {}).get("data")
    if saved:
        return dict(saved)
    config = path.resolve().parent.parent / "config.yaml"
    if config.is_file():
        return OmegaConf.to_container(OmegaConf.load(config)).get("data")
    return None


def load_checkpoint(path: Path, data_name: str | None, device: torch.device) -> Checkpoint:
    """Load a lit_ebm checkpoint, or raise :class:`ConfigError` saying what is wrong."""
    checkpoint = read_checkpoint(path, "--ckpt")
    hparams = checkpoint.get("hyper_parameters") or {}
    objective = (hparams.get("model") or {}).get("objective")
    if objective not in MODULES or "event_shape" not in hparams:
        raise ConfigError(f"--ckpt: '{path}' is not a lit_ebm checkpoint (no model objective "
                          "and event_shape in its hyperparameters): pass a checkpoint written "
                          "by python -m lit_ebm.fit")
    data = _data_config(path, checkpoint) or {}
    if data_name is not None:
        data["name"] = data_name
    if not data.get("name"):
        raise ConfigError(f"--ckpt: '{path}' does not say which data it was trained on (no "
                          "data hyperparameters, no config.yaml beside its run folder): pass "
                          "--data NAME")
    if len(hparams["event_shape"]) != 3:
        raise ConfigError(f"--ckpt: '{path}' models {data['name']} points, but sample quality "
                          "is measured on images: pass checkpoints of image runs")
    module = MODULES[objective].load_from_checkpoint(path, map_location=device)
    return Checkpoint(path, run_label(path), objective, module.eval(), data)


def _check_same_data(checkpoints: list[Checkpoint]) -> str:
    names = {c.label: c.data["name"] for c in checkpoints}
    if len(set(names.values())) > 1:
        listed = ", ".join(f"{label}: {name}" for label, name in names.items())
        raise ConfigError(f"the checkpoints were trained on different data sets ({listed}): "
                          "evaluate checkpoints of one data set together")
    return next(iter(names.values()))


@torch.no_grad()
def validation_bits(checkpoint: Checkpoint, data_root: str | None,
                    batch_size: int) -> tuple[dict[str, float], Tensor | None]:
    """Generator bits/dim on the validation split, and for an EBM its own bits/dim under the
    learned log Z and the energies of the validation images (else None)."""
    module = checkpoint.module
    generator = module.generator
    config = DataConfig(**{**checkpoint.data, "root": data_root or checkpoint.data.get("root"),
                           "batch_size": batch_size, "num_workers": 0})
    datamodule = ImageDataModule(config, dequantise=not generator.discrete)
    datamodule.setup("validate")
    log_q, energy = [], []
    for batch in DataLoader(datamodule.val_set, batch_size=batch_size):
        batch = batch.to(module.device)
        log_q.append(generator.log_prob(batch))
        if isinstance(module, AdversarialEBM):
            energy.append(module.energy(batch))
    d, discrete = generator.num_dims, generator.discrete
    figures = {"bpd": float(bits_per_dim(torch.cat(log_q), d, discrete).mean())}
    if not energy:
        return figures, None
    energies = torch.cat(energy).double()
    log_z = float(module.log_z.detach())
    figures["log_z_learned"] = log_z
    figures["ebm_bpd_learned_log_z"] = float(bits_per_dim(-energies - log_z, d, discrete).mean())
    return figures, energies


@torch.no_grad()
def ebm_draws(module: AdversarialEBM, num_samples: int, candidates: int, batch_size: int,
              label: str) -> dict[str, Tensor]:
    """``num_samples`` groups of ``candidates`` generator samples: the first of each group
    (generator samples), one resampled by weight exp(-E - log q) (EBM samples), and the
    energies and log q of all (for log Z)."""
    generator = module.generator
    groups_per_batch = max(1, batch_size // candidates)
    first, resampled, energy, log_q = [], [], [], []
    with tqdm(total=num_samples * candidates, desc=f"{label}: samples", unit="img",
              disable=None, file=sys.stderr) as progress:
        for n in batches(num_samples, groups_per_batch):
            x, lq = generator.sample(n * candidates)
            e = module.energy(x)
            x = x.reshape(n, candidates, *x.shape[1:])
            pick = sampling_importance_resampling((-e - lq).reshape(n, candidates))
            first.append(to_levels(x[:, 0], generator.discrete).cpu())
            resampled.append(to_levels(x[torch.arange(n), pick], generator.discrete).cpu())
            energy.append(e.double().cpu())
            log_q.append(lq.double().cpu())
            progress.update(n * candidates)
    return {"generator": torch.cat(first), "resampled": torch.cat(resampled),
            "energy": torch.cat(energy), "log_q": torch.cat(log_q)}


def evaluate_checkpoint(checkpoint: Checkpoint, args: argparse.Namespace) -> list[Row]:
    """The generator row of one checkpoint, and for an EBM its resampled row."""
    module, label = checkpoint.module, checkpoint.label
    start = time.perf_counter()
    bits, val_energy = validation_bits(checkpoint, args.data_root, args.batch_size)
    figures: dict[str, Any] = {
        "path": str(checkpoint.path), "objective": checkpoint.objective,
        "generator": module.config.generator.name, "data": checkpoint.data["name"], **bits,
    }
    torch.manual_seed(args.seed)
    if not isinstance(module, AdversarialEBM):
        levels = generated_levels(module.generator.sample, module.generator.discrete,
                                  args.num_samples, args.batch_size)
        figures["seconds_sampling"] = time.perf_counter() - start
        return [Row(label, "generator", levels, figures)]
    draws = ebm_draws(module, args.num_samples, args.candidates, args.batch_size, label)
    estimate = log_partition_proposal(draws["energy"], draws["log_q"])
    g = module.generator
    figures.update({
        "candidates": args.candidates,
        "log_z_q": float(estimate["log_z"]), "log_z_q_stderr": float(estimate["stderr"]),
        "log_z_q_ess": float(estimate["ess"]), "log_z_q_samples": len(draws["energy"]),
        "ebm_bpd_is_log_z": float(bits_per_dim(-val_energy - estimate["log_z"], g.num_dims,
                                               g.discrete).mean()),
        "seconds_sampling": time.perf_counter() - start,
    })
    resampled = {"path": str(checkpoint.path), "objective": "ebm (resampled)",
                 "generator": figures["generator"], "data": figures["data"],
                 "candidates": args.candidates}
    return [Row(label, "generator", draws["generator"], figures),
            Row(f"{label} EBM (SIR, M={args.candidates})", "ebm_resampled",
                draws["resampled"], resampled)]


def sample_metrics(rows: list[Row], data: LabelledImages, args: argparse.Namespace,
                   features_name: str, extractor: torch.nn.Module) -> None:
    """FID, KID, precision, recall, density and coverage of every row against the
    validation split, added to each row's figures."""
    real = image_features(extractor, data.val_images)
    distances = FeatureDistances(extractor.num_features, args.kid_subset_size).to(real.device)
    distances.update(real, real=True)
    for row in tqdm(rows, desc="metrics", disable=None, file=sys.stderr):
        fake = image_features(extractor, row.levels)
        distances.update(fake, real=False)
        values = {**distances.compute(seed=args.seed),
                  **precision_recall_density_coverage(real, fake, NEAREST_NEIGHBOURS)}
        distances.reset_fake()
        row.figures.update({"features": features_name, "num_samples": len(row.levels),
                            **{figure_key(k, features_name): v for k, v in values.items()}})


def _classifier_accuracy(features_name: str) -> dict[str, Any] | None:
    report = WEIGHTS_DIR / f"{features_name}.json"
    return json.loads(report.read_text()) if report.is_file() else None


TABLE_COLUMNS = {  # figure: column title; sample metrics carry the features' name as a suffix
    "bpd": "gen. bpd", "ebm_bpd_learned_log_z": "EBM bpd (learned log Z)",
    "ebm_bpd_is_log_z": "EBM bpd (IS log Z)", "fid": "FID", "kid_mean": "KID",
    "precision": "precision", "recall": "recall", "density": "density", "coverage": "coverage"}
SAMPLE_METRICS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage")


def figure_key(figure: str, features: str) -> str:
    """The results.json key of ``figure``: sample metrics are named by their features."""
    return f"{figure}_{features}" if figure in SAMPLE_METRICS else figure


def column_title(figure: str, features: str) -> str:
    """The table title of ``figure``; FID's names the features."""
    title = TABLE_COLUMNS[figure]
    return f"{title} ({features})" if figure == "fid" else title


def markdown_table(results: dict[str, Any]) -> str:
    """``results.md``: one table, the real-versus-real row first."""
    f = results["features"]
    columns = [(figure_key(figure, f), column_title(figure, f)) for figure in TABLE_COLUMNS]

    def cell(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return ""
        if key.startswith("kid_mean"):
            return f"{row[key]:.4g} ± {row[key.replace('mean', 'std')]:.2g}"
        if key == "ebm_bpd_is_log_z":
            return f"{row[key]:.4f} (log Z {row['log_z_q']:.2f} ± {row['log_z_q_stderr']:.2f})"
        return f"{row[key]:.4f}"

    lines = [f"Features: {f}; {results['num_samples']} images per row against the validation "
             f"split ({results['num_real']} images); KID subsets of "
             f"{results['kid_subset_size']}; seed {results['seed']}.", "",
             "| row | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for row in results["rows"]:
        lines.append(f"| {row['label']} | " + " | ".join(cell(row, key) for key, _ in columns)
                     + " |")
    return "\n".join(lines) + "\n"


def sample_sheet(rows: list[Row]) -> Image.Image:
    """The first images of every row as grids side by side, each under its label."""
    panels = []
    for row in rows:
        grid = make_grid(row.levels[:GRID_IMAGES].float() / 255, nrow=6, padding=2,
                         pad_value=1.0)
        grid = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2),
                                             Image.NEAREST)
        panels.append((row.label, image))
    font = ImageFont.load_default()
    width = max(image.width for _, image in panels)
    header = 4 * 14
    sheet = Image.new("RGB", (len(panels) * (width + 16) + 16, header + 16 + max(
        image.height for _, image in panels)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (label, image) in enumerate(panels):
        left = 16 + index * (width + 16)
        lines = textwrap.wrap(label, width=max(10, width // 7))[:4]
        draw.multiline_text((left, 6), "\n".join(lines), fill="black", font=font, spacing=2)
        sheet.paste(image, (left, header + 8))
    return sheet


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"--out '{out}' cannot be written ({err.strerror or err}): pass a "
                          "writable folder") from None


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate ``args.ckpt`` and write the three output files; returns the results."""
    if args.candidates < 1:
        raise ConfigError(f"--candidates {args.candidates}: draw at least 1 candidate per EBM "
                          "sample (1 gives the generator's samples)")
    start = time.perf_counter()
    device = torch.device(args.device)
    checkpoints = [load_checkpoint(Path(p), args.data, device) for p in args.ckpt]
    data_name = _check_same_data(checkpoints)
    root = args.data_root or checkpoints[0].data.get("root")
    data = ImageDataModule(DataConfig(name=data_name, root=root), dequantise=False).load()
    extractor = build_feature_extractor(data_name, args.inception_weights).to(device)
    features_name = extractor.name
    num_real = len(data.val_images)
    if args.kid_subset_size is None:
        args.kid_subset_size = min(KID_SUBSET_SIZE, num_real)
    check_sample_counts(args.num_samples, num_real, extractor.num_features,
                        args.kid_subset_size, "--num-samples", "--kid-subset-size")
    if args.num_samples > len(data.train_images):
        raise ConfigError(f"--num-samples {args.num_samples} exceeds the {len(data.train_images)}"
                          " training images that the real-versus-real row draws from: use "
                          f"--num-samples<={len(data.train_images)}")
    _prepare_out(Path(args.out))

    torch.manual_seed(args.seed)
    baseline = data.train_images[torch.randperm(len(data.train_images))[:args.num_samples]]
    rows = [Row("real: training split", "real", baseline,
                {"objective": "real", "data": data_name})]
    for checkpoint in checkpoints:
        rows += evaluate_checkpoint(checkpoint, args)
    sample_metrics(rows, data, args, features_name, extractor)
    results = {
        "command": "python -m lit_ebm.evaluate " + " ".join(args.argv),
        "data": data_name, "features": features_name,
        "features_classifier": _classifier_accuracy(features_name),
        "num_samples": args.num_samples, "num_real": num_real,
        "reference": "validation split", "kid_subset_size": args.kid_subset_size,
        "nearest_neighbours": NEAREST_NEIGHBOURS, "candidates": args.candidates,
        "seed": args.seed, "device": str(device),
        "rows": [{"label": row.label, "kind": row.kind, **row.figures} for row in rows],
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(results))
    sample_sheet(rows).save(out / "samples.png")
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lit_ebm.evaluate",
        description="Sample quality (FID, KID, precision, recall, density, coverage on offline "
                    "features), bits/dim, and for EBMs their own bits/dim and resampled samples, "
                    "of lit_ebm checkpoints, beside a real-versus-real row.",
        epilog="Example:\n  python -m lit_ebm.evaluate --ckpt runs/quickstart/version_0/"
               "checkpoints/last.ckpt --out eval/quickstart\n"
               "Exit codes: 0 done, 2 bad input.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True, metavar="CKPT",
                        help="checkpoints of one image data set")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for results.json, results.md and samples.png")
    parser.add_argument("--num-samples", type=int, default=1000, metavar="N",
                        help="images per row (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--candidates", type=int, default=16, metavar="M",
                        help="generator samples per resampled EBM sample (default 16)")
    parser.add_argument("--kid-subset-size", type=int, default=None, metavar="K",
                        help=f"default {KID_SUBSET_SIZE}, or the validation split's size if "
                             "smaller")
    parser.add_argument("--batch-size", type=int, default=256, metavar="B",
                        help="images per forward pass (default 256)")
    parser.add_argument("--data", default=None, metavar="NAME",
                        help="the data set, for checkpoints that do not record it")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="data.root to read the data from (default: as in training)")
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="cifar10: a local weights-inception-2015-12-05-6726825d.pth")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = parse_args(argv)
    try:
        results = evaluate(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(Path(args.out, "results.md").read_text(), end="")
    print(f"{len(results['rows'])} rows in {results['seconds']:.1f} s; written to "
          f"{args.out}/results.json, results.md, samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
