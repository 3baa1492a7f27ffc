"""params.yaml loads strictly: typos, wrong types and bad values name the key and the file."""
import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from harness import config
from harness.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _smoke() -> dict:
    return yaml.safe_load(config.profile_path("smoke").read_text())


def _write(tmp_path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("name", config.PROFILES)
def test_profiles_load(name):
    cfg = config.load(config.profile_path(name))
    assert cfg.profile == name
    assert cfg.to_dict()["profile"] == name


def test_repo_params_is_a_valid_profile():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.profile in config.PROFILES


def test_paper_profile_has_the_papers_settings():
    t = config.load(config.profile_path("paper")).train
    assert (t.iterations, t.batch_size, t.lr, t.betas, t.milestones, t.gamma, t.loss) == (
        300000, 32, 2e-4, (0.9, 0.99), (150000, 225000, 275000), 0.5, "l1")
    assert config.load(config.profile_path("paper")).data.patch_size == 64


def test_unknown_key_names_file_key_and_closest(tmp_path):
    d = _smoke()
    d["train"]["iteratons"] = d["train"].pop("iterations")
    with pytest.raises(ConfigError) as e:
        config.load(_write(tmp_path, d))
    msg = str(e.value)
    assert "params.yaml" in msg and "train.iteratons" in msg and "did you mean 'train.iterations'" in msg


def test_unknown_section(tmp_path):
    d = _smoke()
    d["trian"] = d.pop("train")
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        config.load(_write(tmp_path, d))


@pytest.mark.parametrize("key,value,pattern", [
    (("train", "iterations"), "300", r"train\.iterations: must be an integer, got '300'"),
    (("train", "lr"), "fast", r"train\.lr: must be a number"),
    (("train", "iterations"), True, r"train\.iterations: must be an integer"),
    (("data", "sub_images"), "yes", r"data\.sub_images: must be true or false"),
    (("train", "betas"), [0.9], r"train\.betas: must be a list of 2 values"),
    (("train", "loss"), "l2", r"train\.loss: must be one of 'l1', 'charbonnier', got 'l2'"),
    (("train", "amp"), "bf61", r"did you mean 'bf16'"),
    (("data", "test"), "set5", r"data\.test: must be a list"),
])
def test_wrong_type(tmp_path, key, value, pattern):
    d = _smoke()
    d[key[0]][key[1]] = value
    with pytest.raises(ConfigError, match=pattern):
        config.load(_write(tmp_path, d))


@pytest.mark.parametrize("key,value,pattern", [
    (("train", "iterations"), 0, r"train\.iterations: must be >= 1"),
    (("train", "milestones"), [200, 100], r"train\.milestones: must be increasing"),
    (("train", "ema_decay"), 1.0, r"train\.ema_decay: must be in \[0, 1\)"),
    (("evaluate", "tile_overlap"), 64, None),
    (("degrade", "scale"), 5, r"degrade\.scale: must be 2, 3 or 4"),
    (("report", "visual_images"), 0, r"report\.visual_images: must be >= 1"),
])
def test_bad_value(tmp_path, key, value, pattern):
    d = _smoke()
    d[key[0]][key[1]] = value
    if key == ("evaluate", "tile_overlap"):
        d["evaluate"]["tile"] = 32
        pattern = r"evaluate\.tile_overlap: must be in \[0, tile\)"
    with pytest.raises(ConfigError, match=pattern):
        config.load(_write(tmp_path, d))


def test_nested_dataclass_list_errors_name_index(tmp_path):
    d = _smoke()
    d["runs"]["degradations"] = [{"codec": "jpeg", "level": 10}, {"codec": "hevc", "level": 99}]
    with pytest.raises(ConfigError, match=r"runs\.degradations\[1\]\.level: HEVC QP must be in 0\.\.51"):
        config.load(_write(tmp_path, d))
    d["runs"]["degradations"] = [{"codec": "jpg", "level": 10}]
    with pytest.raises(ConfigError, match=r"runs\.degradations\[0\]\.codec: .*did you mean 'jpeg'"):
        config.load(_write(tmp_path, d))


def test_missing_key(tmp_path):
    d = _smoke()
    del d["train"]["seed"]
    with pytest.raises(ConfigError, match=r"train\.seed: missing key"):
        config.load(_write(tmp_path, d))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        config.load(tmp_path / "nope.yaml")
    p = tmp_path / "params.yaml"
    p.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(p)


def test_config_is_frozen_and_types_converted():
    cfg = config.load(config.profile_path("smoke"))
    assert isinstance(cfg.data.test, tuple) and isinstance(cfg.train.lr, float)
    lr = cfg.train.lr
    with pytest.raises(dataclasses.FrozenInstanceError, match="lr"):
        cfg.train.lr = 1.0  # type: ignore[misc]
    assert cfg.train.lr == lr
    for f in dataclasses.fields(cfg):   # every section, and the top level, is frozen too
        with pytest.raises(dataclasses.FrozenInstanceError, match=f.name):
            setattr(cfg, f.name, None)
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            first = dataclasses.fields(section)[0].name
            with pytest.raises(dataclasses.FrozenInstanceError, match=first):
                setattr(section, first, None)


def test_switch_profile(tmp_path):
    target = tmp_path / "params.yaml"
    config.switch_profile("paper", target)
    assert config.load(target).profile == "paper"
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        config.switch_profile("papr", target)
    assert config.load(target).profile == "paper"
    d = copy.deepcopy(_smoke())
    assert d["profile"] == "smoke"
