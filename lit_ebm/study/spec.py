"""A study file: what a comparison trains, for how long, on how many seeds, and how it is
measured (docs/studies.md). Loaded strictly: an unknown key or a bad value is a one-line
:class:`~lit_ebm.errors.ConfigError` naming the file and the key."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from lit_ebm.config.rules import (
    check_settings,
    non_negative,
    one_of,
    positive,
    positive_numbers,
    setting,
    unit_interval,
)
from lit_ebm.errors import ConfigError

ARMS = ("ml_continued", "adversarial", "energy_over_adversarial", "energy_over_ml")
"""The continuation arms, each from the same ML start: (a) maximum likelihood continued, (b) the
adversarial generator, (c) the energy alone over (b)'s generator, (d) the energy alone over the
ML start's generator. (b) and (c) share one budget; (a) and (d) have one each; (b) has the whole
of its budget where a study leaves (c) out."""
SAMPLERS = ("generator", "sir", "imh", "mala")


def config_key(arm: str) -> str:
    """The key of a generator's section that names an arm's config: (c) and (d) share
    ``energy``."""
    return "energy" if arm.startswith("energy") else arm


@dataclass
class RunSpec:
    """A shipped config (or a YAML path) and the overrides a study applies to it."""

    config: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class Ablation:
    """One row of an ablation: the adversarial arm (b) with ``overrides`` added to its own, or,
    with ``config``, that config and ``overrides`` alone (a control such as maximum likelihood
    with (b)'s optimiser); trained from the same start for (b)'s budget and seeds."""

    config: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class GeneratorStudy:
    """The runs of one generator: its ML start (trained to the end of its schedule), the
    configs of the arms continued from it (the energy config serves (c) and (d)), and the rows
    of an ablation of (b), by name."""

    start: RunSpec = field(default_factory=RunSpec)
    ml_continued: RunSpec | None = None  # each needed where the study trains its arm
    adversarial: RunSpec | None = None
    energy: RunSpec | None = None
    ablations: dict[str, Ablation] = field(default_factory=dict)

    def spec(self, arm: str) -> RunSpec:
        """What the arm or ablation row ``arm`` trains (an arm's spec is checked present)."""
        if arm in ARMS:
            spec = getattr(self, config_key(arm))
            assert spec is not None, f"{arm} has no config: load studies with load_study"
            return spec
        row, adversarial = self.ablations[arm], self.spec("adversarial")
        if row.config is not None:
            return RunSpec(row.config, list(row.overrides))
        return RunSpec(adversarial.config, [*adversarial.overrides, *row.overrides])


@dataclass
class HeadlineSampler:
    """The EBM sampler the verdicts use, fixed before any test figure is seen."""

    method: str = setting("sir", one_of("sir", "imh", "mala"))
    steps: int = setting(16, positive)  # sir, imh: candidates M; mala: transitions K


@dataclass
class EvaluationSpec:
    """How every final checkpoint is measured, once, on ``split``."""

    split: str = setting("test", one_of("test", "val"))
    num_samples: int = setting(500, positive)  # images per row
    sampling_seeds: list[int] = field(default_factory=lambda: [0])
    temperatures: list[float] = setting([0.8, 0.9, 1.0], positive_numbers)
    candidates: list[int] = setting([4, 16, 64], positive_numbers)  # SIR and IMH: M
    mala_steps: list[int] = setting([10, 30, 100], positive_numbers)  # flows: K transitions
    mala_burn_in: int = setting(20, non_negative)  # step-size adaptation before the K
    log_z_samples: int = setting(200, positive)  # AIS chains (flows) or IS draws, and 4x that
    log_z_temperatures: int = setting(25, positive)  # AIS: K, checked against 4K
    headline: HeadlineSampler = field(default_factory=HeadlineSampler)
    # the training seeds whose EBMs get every sampler above; the others get the headline one
    grid_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    batch_size: int = setting(250, positive)


@dataclass
class Study:
    """A whole comparison on one data set."""

    name: str = MISSING
    data: str = setting(MISSING, one_of("mnist5k", "mnist", "fashion_mnist", "cifar10"))
    start_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # training seeds of each arm
    arms: list[str] = field(default_factory=lambda: list(ARMS))  # the arms it trains
    budget_seconds: float = setting(MISSING, positive)  # per arm; (b) + (c) share one
    energy_share: float = setting(0.34, unit_interval)  # (c)'s part of (b) + (c)
    overrides: list[str] = field(default_factory=list)  # every run's, before its own
    generators: dict[str, GeneratorStudy] = field(default_factory=dict)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)

    def adversarial_seconds(self) -> float:
        """(b)'s budget, which its ablation rows share: its part of (b) + (c), or the whole
        budget where the study leaves (c) out."""
        if "energy_over_adversarial" in self.arms:
            return (1 - self.energy_share) * self.budget_seconds
        return self.budget_seconds


def normalised(study: dict) -> dict | None:
    """A study as recorded in a results file, with the defaults of settings added since; None
    where it holds a setting this version does not know."""
    try:
        merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Study), study))
    except OmegaConfBaseException:
        return None
    assert isinstance(merged, Study)
    return asdict(merged)


def load_study(path: str | Path) -> Study:
    """The study in the YAML file at ``path``, checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file '{path}' does not exist: pass a YAML file such as "
                          "lit_ebm/studies/mnist5k.yaml")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Study), OmegaConf.load(path))
        study = OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        raise ConfigError(f"{path}: unknown key '{err.full_key}'") from None
    except (ValidationError, MissingMandatoryValue) as err:
        raise ConfigError(f"{path}: bad or missing value for '{err.full_key}': "
                          f"{str(err).splitlines()[0]}") from None
    assert isinstance(study, Study)
    check_settings(study, name_of=lambda key: f"{path.name}: {key}")
    if not study.generators or not study.seeds or len(set(study.seeds)) < len(study.seeds):
        raise ConfigError(f"{path}: a study needs at least one generator and distinct seeds")
    unknown = set(study.generators) - {"realnvp", "pixelcnn"}
    if unknown:
        raise ConfigError(f"{path}: generators are named realnvp or pixelcnn, got {unknown}")
    check_arms(study, path)
    return study


def check_arms(study: Study, path: Path) -> None:
    """The arms are known and complete ((c) needs (b)); ablation rows need (b) and names of
    their own."""
    if not study.arms or set(study.arms) - set(ARMS) or len(set(study.arms)) < len(study.arms):
        raise ConfigError(f"{path}: arms are distinct names among {', '.join(ARMS)}; "
                          f"got {study.arms}")
    if "energy_over_adversarial" in study.arms and "adversarial" not in study.arms:
        raise ConfigError(f"{path}: the arm energy_over_adversarial is fitted over the "
                          "adversarial arm's generator: add adversarial to arms")
    for generator, runs in study.generators.items():
        for arm in study.arms:
            key = config_key(arm)
            if getattr(runs, key) is None:
                raise ConfigError(f"{path}: the arm {arm} needs generators.{generator}.{key}: "
                                  "add its config, or leave the arm out of arms")
        taken = set(runs.ablations) & {"start", *ARMS}
        if taken:
            raise ConfigError(f"{path}: {generator}'s ablation rows {sorted(taken)} take the "
                              "name of an arm: rename them")
        if runs.ablations and "adversarial" not in study.arms:
            raise ConfigError(f"{path}: {generator}'s ablation rows vary the adversarial arm: "
                              "add adversarial to arms")
