"""Settings resolution: defaults < profile < YAML < environment < flags; clear errors."""

from __future__ import annotations

import pytest

from serialgen.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for var in [v for v in os.environ if v.startswith("SERIALGEN_")]:
        monkeypatch.delenv(var)


def test_tiny_is_the_default_profile():
    s = load_settings()
    assert s.profile == "tiny" and s.render.width == 128 and s.lake == "./lake"


def test_profile_yaml_env_flag_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profile: sd15\nrender:\n  samples: 5\n  workers: 3\nlake: /from/yaml\n")
    s = load_settings(config_file=cfg)
    assert s.profile == "sd15" and s.render.width == 512          # profile from the file
    assert s.render.samples == 5 and s.render.workers == 3         # file beats profile
    monkeypatch.setenv("SERIALGEN_RENDER__SAMPLES", "9")
    monkeypatch.setenv("SERIALGEN_LAKE", "/from/env")
    monkeypatch.setenv("SERIALGEN_RAY_ADDRESS", "ray://head:10001")
    s = load_settings(config_file=cfg)
    assert (s.render.samples, s.lake, s.ray.address) == (9, "/from/env", "ray://head:10001")
    s = load_settings(config_file=cfg, lake="/from/flag", profile="tiny")
    assert s.lake == "/from/flag" and s.profile == "tiny" and s.render.width == 128


def test_env_profile(monkeypatch):
    monkeypatch.setenv("SERIALGEN_PROFILE", "sd15")
    assert load_settings().standardizer.width == 512


def test_section_hash_changes_with_its_section_only():
    a, b = load_settings(), load_settings(render={"samples": 99})
    assert a.section_hash("render") != b.section_hash("render")
    assert a.section_hash("composite") == b.section_hash("composite")


def test_a_setting_added_later_changes_the_hash_only_when_set_away_from_its_default():
    before = load_settings().standardizer.output_settings()
    assert "colour_augment" not in before  # lakes built before the setting existed keep their lineage
    assert load_settings(standardizer={"colour_augment": 0.0}).section_hash("standardizer") == \
        load_settings().section_hash("standardizer")
    turned = load_settings(standardizer={"colour_augment": 0.5})
    assert turned.standardizer.output_settings()["colour_augment"] == 0.5
    assert turned.section_hash("standardizer") != load_settings().section_hash("standardizer")


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "huge"}, "unknown profile 'huge'"),
    ({"lake": "ftp://x/y"}, "invalid lake URI"),
    ({"render": {"samples": "many"}}, "invalid setting render.samples"),
    ({"render": {"colour": 1}}, "invalid setting render.colour"),
    ({"render": {"device": "GPU"}}, "invalid setting render: .*GPU and render.gpus_per_worker > 0 go together"),
    ({"render": {"gpus_per_worker": 0.25}}, "invalid setting render: .*go together"),
])
def test_bad_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(**kwargs)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("render: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_file=bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(config_file=listy)
