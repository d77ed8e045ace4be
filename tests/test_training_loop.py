"""Resume rules of a training run folder: continue an interrupted or shorter run of the same training,
start over when the data or the training recipe changed, refuse another model definition."""

from __future__ import annotations

import pytest

from serialgen.config import ConfigError, StandardizerSettings
from serialgen.training.loop import prepare_run_folder, training_recipe


def _folder_with_checkpoint(tmp_path, recipe):
    prepare_run_folder(tmp_path, {"width": 64}, {"pairs": 3}, True, recipe)
    (tmp_path / "checkpoint-0000060").mkdir()
    return tmp_path


def test_same_training_resumes_and_a_new_recipe_or_data_starts_over(tmp_path):
    folder = _folder_with_checkpoint(tmp_path / "a", {"learning_rate": 1e-3})
    prepare_run_folder(folder, {"width": 64}, {"pairs": 3}, True, {"learning_rate": 1e-3})
    assert (folder / "checkpoint-0000060").is_dir()            # same recipe and data: resume
    prepare_run_folder(folder, {"width": 64}, {"pairs": 3}, True, {"learning_rate": 5e-4})
    assert not any(folder.glob("checkpoint-*"))                  # new learning rate: start over

    folder = _folder_with_checkpoint(tmp_path / "b", {"learning_rate": 1e-3})
    prepare_run_folder(folder, {"width": 64}, {"pairs": 4}, True, {"learning_rate": 1e-3})
    assert not any(folder.glob("checkpoint-*"))                  # new training data: start over


def test_another_model_definition_is_refused(tmp_path):
    folder = _folder_with_checkpoint(tmp_path, {"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="was trained with other width"):
        prepare_run_folder(folder, {"width": 32}, {"pairs": 3}, True, {"learning_rate": 1e-3})
    assert (folder / "checkpoint-0000060").is_dir()


def test_a_cosine_schedule_ties_the_recipe_to_the_step_count():
    constant = StandardizerSettings(steps=100)
    assert training_recipe(constant) == training_recipe(constant.model_copy(update={"steps": 200}))  # train longer
    cosine = StandardizerSettings(steps=100, lr_schedule="cosine")
    assert training_recipe(cosine) != training_recipe(cosine.model_copy(update={"steps": 200}))  # another decay
    assert "num_workers" not in training_recipe(cosine)                                           # runtime only
    sampled_otherwise = cosine.model_copy(update={"inference_steps": 1, "guidance_scale": 2.0})
    assert training_recipe(cosine) == training_recipe(sampled_otherwise)                         # weights unchanged
