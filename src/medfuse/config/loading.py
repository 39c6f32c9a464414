"""Finding, reading and validating configs: shipped names, YAML files and ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from medfuse.config.messages import describe_errors
from medfuse.config.run import RunConfig
from medfuse.errors import ConfigError, did_you_mean, format_options

CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIG_ALIASES = {"siim_isic": "isic2020"}  # other names of shipped configs


def available_configs() -> list[str]:
    """Names of the configs shipped in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, or a name from ``configs/`` (``iu_xray`` or ``iu-xray``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = str(name_or_path).removesuffix(".yaml").replace("-", "_")
    stem = CONFIG_ALIASES.get(stem, stem)
    candidate = CONFIG_DIR / f"{stem}.yaml"
    if candidate.is_file():
        return candidate
    names = available_configs()
    if path.is_dir():
        raise ConfigError(f"config '{path}' is a folder; give the path of a YAML file "
                          "(or the name of a built-in config)")
    if path.suffix.lower() in (".yaml", ".yml") or len(path.parts) > 1:  # meant as a path
        raise ConfigError(
            f"config file '{path}' does not exist (relative paths are read from the current "
            f"directory, '{Path.cwd()}'); check the path, or give a built-in config name: "
            f"{format_options(names)}"
        )
    raise ConfigError(
        f"config '{name_or_path}' is neither a file nor a built-in config name. "
        f"Built-in configs: {format_options(names)}.{did_you_mean(stem, names)}"
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override '{item}' must look like 'section.key=value', "
                "e.g. --set train.max_epochs=3"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from exc
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override '{item}': '{where}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def parse_config(
    raw: dict[str, Any], source: str = "<config>", overrides: list[str] | None = None
) -> RunConfig:
    """Validate a raw dict (e.g. from YAML) into a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping with a 'data' section")
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = describe_errors(exc)
        raise ConfigError(f"invalid config {source}:\n  - " + "\n  - ".join(lines)) from None


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config by name (from ``configs/``) or path, applying ``--set`` overrides."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config '{path}' is not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config '{path}' is not UTF-8 text (byte {exc.start}: "
            f"{exc.object[exc.start:exc.start + 1]!r}); is it really a YAML file? Re-save "
            "it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config '{path}' cannot be read: {exc.strerror or exc}") from None
    cfg = parse_config(raw, source=f"'{path}'", overrides=overrides)
    if cfg.name is None:
        cfg.name = path.stem
    return cfg
