"""Model folders: one rule for where each lives, and versions that follow the bytes of the weights."""

from __future__ import annotations

import os

import pytest

from serialgen.checkpoints import (
    NoModelFolder,
    content_version,
    personalizer_dir,
    preprocessors_dir,
    standardizer_dir,
)


def test_configured_folders_win_and_a_local_lake_holds_the_rest(settings, tmp_path):
    lake = tmp_path / "lake"
    assert standardizer_dir(settings) == lake / "_checkpoints" / "standardizer"
    assert preprocessors_dir(settings) == lake / "_checkpoints" / "preprocessors"
    assert personalizer_dir(settings, "unpaired") == lake / "_checkpoints" / "personalizer" / "unpaired"
    configured = settings.model_copy(update={
        "standardizer": settings.standardizer.model_copy(update={"checkpoint_dir": tmp_path / "std"}),
        "personalizer": settings.personalizer.model_copy(update={"checkpoint_dir": tmp_path / "ip"})})
    assert standardizer_dir(configured) == tmp_path / "std" / "standardizer"
    assert preprocessors_dir(configured) == tmp_path / "std" / "preprocessors"
    assert personalizer_dir(configured) == tmp_path / "ip" / "two_stage"


def test_an_object_store_lake_needs_the_folder_configured(settings):
    remote = settings.model_copy(update={"lake": "s3://bucket/lake"})
    with pytest.raises(NoModelFolder, match="s3://bucket/lake is not a local folder: set personalizer.checkpoint_dir"):
        personalizer_dir(remote)
    with pytest.raises(NoModelFolder, match="set standardizer.checkpoint_dir"):
        standardizer_dir(remote)


def test_a_version_follows_the_bytes_not_the_write(tmp_path):
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "weights.bin").write_bytes(b"\x00" * 1000)
    (model / "config.json").write_text("{}")
    version = content_version(model)
    (model / "unet" / "weights.bin").write_bytes(b"\x00" * 1000)        # rewritten with the same bytes (a resume)
    os.utime(model / "config.json", (0, 0))                             # touched
    assert content_version(model) == version
    (model / "unet" / "weights.bin").write_bytes(b"\x00" * 999 + b"\x01")  # same size, other weights
    assert content_version(model) != version
    (model / "unet" / "weights.bin").write_bytes(b"\x00" * 1000)
    (model / "unet" / "weights.bin").rename(model / "unet" / "other.bin")
    assert content_version(model) != version                            # names belong to the model too
    assert content_version(model / "config.json") == content_version(model / "config.json")
