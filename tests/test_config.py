from __future__ import annotations

from pathlib import Path

import pytest

from medfuse.config import (
    DataSpec,
    RunConfig,
    apply_overrides,
    available_configs,
    load_config,
    parse_config,
)
from medfuse.errors import ConfigError


@pytest.mark.parametrize("name", ["iu_xray", "br35h", "synth_derm", "isic2020"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.name == name
    assert cfg.data.modalities


def test_config_alias() -> None:
    assert load_config("siim_isic") == load_config("isic2020")
    assert load_config("siim-isic").data.image_template == "jpeg/train/{}.jpg"


def test_dash_name_and_path(tmp_path: Path) -> None:
    assert load_config("iu-xray").data.text == "report"
    path = tmp_path / "c.yaml"
    path.write_text(load_config("br35h").to_yaml())
    assert load_config(path).data.image == "image_path"


def test_overrides_are_applied_and_typed() -> None:
    cfg = load_config(
        "synth_derm",
        ["train.max_epochs=3", "model.hidden_dims=[64, 32]", "data.split.dedupe_images=false"],
    )
    assert cfg.train.max_epochs == 3
    assert cfg.model.hidden_dims == [64, 32]
    assert cfg.data.split.dedupe_images is False


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("synth_derm", ["train.max_epoch=3"])
    msg = str(exc.value)
    assert "unknown key 'train.max_epoch'" in msg
    assert "Did you mean 'max_epochs'?" in msg
    assert "synth_derm.yaml" in msg


def test_bad_literal_names_key_value_and_options() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("synth_derm", ["model.fusion=concatt"])
    msg = str(exc.value)
    assert "'model.fusion' must be one of {'concat', 'gated', 'late'}" in msg
    assert "Got 'concatt'" in msg
    assert "Did you mean 'concat'?" in msg


def test_bad_column_type_in_tabular() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("synth_derm", ["data.tabular.age=continous"])
    msg = str(exc.value)
    assert "'data.tabular.age'" in msg and "Did you mean 'continuous'?" in msg


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("synth_derm", ["train.max_epochs=many"])
    msg = str(exc.value)
    assert "'train.max_epochs'" in msg and "'many'" in msg


def test_policy_value_checked() -> None:
    with pytest.raises(ConfigError, match=r"'data.policy.missing_image' must be one of"):
        load_config("br35h", ["data.policy.missing_image=ignore"])


@pytest.mark.parametrize("bad", ["train.max_epochs", "=3", "train.max_epochs.x=1"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        load_config("synth_derm", [bad])


def test_unknown_config_name_suggests() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("br35")
    assert "Did you mean 'br35h'?" in str(exc.value)
    assert set(available_configs()) >= {"iu_xray", "br35h", "synth_derm"}


def test_missing_data_section_and_no_modality() -> None:
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        parse_config({})
    with pytest.raises(ConfigError, match="no input modality"):
        parse_config({"data": {"table": "x.csv", "target": "y"}})


def test_column_with_two_roles_rejected() -> None:
    with pytest.raises(ConfigError, match="column 'age' is used both"):
        parse_config({"data": {"tabular": {"age": "continuous"}, "target": "age"}})


def test_invalid_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_apply_overrides_creates_sections() -> None:
    raw = apply_overrides({"data": {"image": "x"}}, ["train.lr=0.01"])
    assert raw["train"] == {"lr": 0.01}


def test_dataspec_helpers() -> None:
    spec = DataSpec(
        image="img", tabular={"age": "continuous", "sex": "categorical"}, text="t", target="y"
    )
    assert spec.modalities == ["image", "tabular", "text"]
    assert spec.continuous == ["age"] and spec.categorical == ["sex"]
