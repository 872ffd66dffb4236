"""Reading configs: YAML files merged left to right onto the schema, then ``key=value``
overrides, with OmegaConf's errors turned into one line that names the key and the fix.

A config file may start from others: ``defaults: [base.yaml, ...]`` (paths relative to the
file) are merged first, in order, and the file's own keys win. ``--config`` takes a path, or
the name of a config shipped in the package's ``configs/`` folder (``quickstart``,
``data/mnist5k``): a file that exists is read as a path, anything else is looked up by name.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lit_ebm.config.cross_checks import cross_checks
from lit_ebm.config.rules import check_settings
from lit_ebm.config.schema import Config
from lit_ebm.errors import ConfigError
from lit_ebm.objective_names import MAXIMUM_LIKELIHOOD

DEFAULTS_KEY = "defaults"
# The shipped configs: the package is installed as plain files (wheels always are), so the
# resource is a folder on disk, and `defaults:` resolve inside it like in any other folder.
PACKAGED_CONFIGS = Path(str(resources.files("lit_ebm") / "configs"))
_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "list[float]": "a list of numbers"}


def _all_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node.keys():
        dotted = f"{prefix}{key!s}"
        keys.append(dotted)
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            keys.extend(_all_keys(child, f"{dotted}."))
    return keys


def _unknown_key_error(schema: DictConfig, key: str) -> ConfigError:
    candidates = _all_keys(schema)
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    close += [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c not in close]
    hint = f" Did you mean: {', '.join(close[:3])}?" if close else ""
    return ConfigError(f"unknown config key '{key}'.{hint} (`--print-config` lists every key)")


def _expected_type(key: str) -> str:
    """Human wording of the schema type of dotted ``key``, read from the dataclasses."""
    node: Any = Config
    hint: Any = None
    for part in key.split("."):
        hints = typing.get_type_hints(node)
        if part not in hints:
            return "a value of the schema's type"
        hint = node = hints[part]
    if typing.get_origin(hint) is list:
        return _TYPE_NAMES["list[float]"]
    options = [a for a in typing.get_args(hint) or (hint,) if a is not type(None)]
    names = [_TYPE_NAMES.get(a.__name__, a.__name__) for a in options]
    return " or ".join(names + (["null"] if type(None) in typing.get_args(hint) else []))


def _merge(schema: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(schema, other)
    except ConfigKeyError as err:
        raise _unknown_key_error(schema, str(err.full_key)) from None
    except ValidationError as err:
        raise ConfigError(
            f"invalid value {getattr(err, 'value', None)!r} for config key '{err.full_key}' "
            f"(from {source}): expected {_expected_type(str(err.full_key))}"
        ) from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not read config from {source}: {err.msg}") from None
    assert isinstance(merged, DictConfig)
    return merged


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: '{path}' (pass an existing YAML file to "
                          "--config)")
    try:
        loaded: Any = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends: report, never a traceback
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys, not a list")
    if not loaded:
        raise ConfigError(f"config file '{path}' is empty: give it the keys of a run (see "
                          "`lit-ebm-fit --config quickstart --print-config`), or leave out "
                          "--config to use every default")
    return loaded


def packaged_config_names() -> list[str]:
    """The names ``--config`` accepts for the shipped configs: experiments first
    (``quickstart``), then their parts (``data/mnist5k``)."""
    names = [p.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix()
             for p in PACKAGED_CONFIGS.rglob("*.yaml")]
    return sorted(names, key=lambda name: (name.count("/"), name))


def resolve_config(name_or_path: str) -> Path:
    """The file that ``--config name_or_path`` means: the path itself when it is a file,
    otherwise the shipped config of that name (``.yaml`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name, names = name_or_path.removesuffix(".yaml"), packaged_config_names()
    if name in names:
        return PACKAGED_CONFIGS / f"{name}.yaml"
    raise ConfigError(f"config file not found: '{name_or_path}', and no shipped config has that "
                      f"name: give --config an existing YAML file or one of {', '.join(names)}")


def _merge_file(merged: DictConfig, path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """Merge ``path`` onto ``merged``, after the files its ``defaults`` list names."""
    if path.resolve() in chain:
        raise ConfigError(f"config file '{path}' includes itself through its defaults")
    loaded = _load_yaml(path)
    parents = loaded.pop(DEFAULTS_KEY, None)
    if parents is not None:
        if not isinstance(parents, ListConfig) or not all(isinstance(p, str) for p in parents):
            raise ConfigError(f"config file '{path}': '{DEFAULTS_KEY}' must be a list of YAML "
                              "files relative to it, e.g. defaults: [base/realnvp.yaml]")
        for parent in parents:
            merged = _merge_file(merged, path.parent / parent, (*chain, path.resolve()))
    return _merge(merged, loaded, f"'{path}'") if loaded else merged


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value "
                              "(e.g. data.batch_size=32)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not parse overrides {overrides}: {err.msg}") from None


def validate(cfg: Config) -> None:
    """Check every key's rules, then the rules between keys."""
    check_settings(cfg)
    cross_checks(cfg)


def load_config(files: list[str], overrides: list[str] | None = None) -> Config:
    """Merge YAML ``files`` (paths or shipped config names) left to right onto the schema,
    then ``key=value`` overrides."""
    merged = OmegaConf.structured(Config)
    for name_or_path in files:
        merged = _merge_file(merged, resolve_config(name_or_path))
    merged = _merge(merged, _parse_overrides(overrides or []), "the command line")
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def unused_overrides(cfg: Config, overrides: list[str]) -> list[str]:
    """One line for each override that changes nothing in the run ``cfg`` describes: a
    generator or energy section other than the one ``model.generator.name`` or
    ``model.energy.name`` picks, or an energy section of a maximum-likelihood run. Not an error:
    one list of overrides may serve several runs (the toy2d notebook's does)."""
    notes = []
    for item in overrides:
        parts = item.split("=", 1)[0].strip().split(".")
        if len(parts) < 3 or parts[0] != "model" or parts[1] not in ("generator", "energy"):
            continue
        group = getattr(cfg.model, parts[1])
        if not is_dataclass(getattr(group, parts[2], None)):
            continue
        if parts[1] == "energy" and cfg.model.objective == MAXIMUM_LIKELIHOOD:
            notes.append(f"override '{item}' changes nothing: a maximum-likelihood run "
                         "(model.objective=mle) has no energy")
        elif parts[2] != group.name:
            notes.append(f"override '{item}' changes nothing: model.{parts[1]}.name is "
                         f"{group.name}; add model.{parts[1]}.name={parts[2]} if you meant it")
    return notes


def to_container(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass: what goes into checkpoints."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(plain, dict)
    return plain  # type: ignore[return-value]


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text, as written to ``config.yaml``."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
