"""Pixel-space autoencoder, the Table 3 baselines and the ablation stage (tiny models, drawn figures)."""

from __future__ import annotations

import json

import pytest
import torch

from serialgen.models import PixelShuffleAutoencoder, Standardizer, tiny_components
from serialgen.models.pixel_space import load_autoencoder
from serialgen.stages.ablate_standardizer import run_ablate_standardizer
from serialgen.training.ablation import baseline_predictions, evaluation_pairs, recolour, score
from test_standardizer import H, W, make_pairs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pixel_space_is_exact_and_saves_with_the_model(tmp_path):
    images = torch.rand(2, 3, H, W) * 2 - 1
    autoencoder = PixelShuffleAutoencoder(patch_size=4)
    latents = autoencoder.encode(images).latent_dist.mode()
    assert latents.shape == (2, 48, H // 4, W // 4)
    assert torch.equal(autoencoder.decode(latents).sample, images)
    model = Standardizer.from_components(tiny_components(seed=0))
    model.save_pretrained(tmp_path / "m")
    loaded = load_autoencoder(tmp_path / "m" / "vae")
    assert isinstance(loaded, PixelShuffleAutoencoder) and loaded.config.patch_size == 4
    assert torch.equal(Standardizer.from_pretrained(tmp_path / "m").decode_latents(latents), images.clamp(-1, 1))


def test_baselines_mean_nearest_and_input():
    white, red, blue = (torch.full((3, H, W), v) for v in (1.0, 0.0, -1.0))
    train = [{"character_id": "a", "target_image": white}, {"character_id": "a", "target_image": white},
             {"character_id": "b", "target_image": red}, {"character_id": "c", "target_image": blue}]
    inputs = torch.stack([blue * 0.9, white * 0.8])
    out = baseline_predictions(train, inputs, torch.zeros(2, 1, H, W))
    assert torch.equal(out["input (resized)"], inputs)
    assert torch.allclose(out["mean training standard"], torch.zeros(2, 3, H, W))  # one standard per character
    assert torch.equal(out["nearest training standard"], torch.stack([blue, white]))
    # The recoloured template: the mean template's figure takes the input figure's colours, band by band.
    template = torch.ones(3, H, W)
    template[:, 10:40, 8:24] = 0.0                                    # a grey figure on white
    reference = torch.ones(3, H, W)
    reference[:, 5:45, 4:28] = torch.tensor([0.6, -0.6, -0.2])[:, None, None]
    figure = torch.zeros(H, W, dtype=torch.bool)
    figure[5:45, 4:28] = True
    tinted = recolour(template, reference, figure)
    assert torch.allclose(tinted[:, 10:40, 8:24], torch.tensor([0.6, -0.6, -0.2])[:, None, None], atol=1e-6)
    assert torch.equal(tinted[:, :10], template[:, :10])              # the background stays white
    p, s = score(white[None], white[None])
    assert torch.isinf(p).all() and torch.allclose(s, torch.ones(1))


def test_evaluation_pairs_cover_characters_first():
    data = [{"character_id": c} for c in "aabbbc"]
    assert evaluation_pairs(data, 4) == [0, 2, 5, 1]


def test_ablation_records_table_in_evaluations(settings, lake):
    make_pairs(lake, 8, test=3)
    cfg = settings.standardizer.model_copy(update={
        "steps": 2, "batch_size": 2, "width": W, "height": H, "inference_steps": 2, "validation_pairs": 1,
        "checkpoint_every": 0, "num_workers": 0})
    settings = settings.model_copy(update={"standardizer": cfg})
    report = run_ablate_standardizer(settings, eval_pairs=2, variants=["no modules", "FBDM+RPIM"], log=lambda _: None)
    methods = [r.method for r in report.ablation.rows]
    assert methods == ["no modules", "FBDM+RPIM", "input (resized)", "mean training standard",
                       "recoloured mean standard", "nearest training standard"]
    assert all(r.n == 2 for r in report.ablation.rows) and report.train_pairs == 8 and report.test_pairs == 3
    assert report.ablation.grid.shape == (2 * H, 5 * W, 3)  # input | 2 variants | recoloured template | target
    evaluations = lake.read("evaluations").to_pylist()
    aggregates = {(e["method"], e["metric"]): e for e in evaluations if e["pair_id"] is None}
    assert len(aggregates) == 12 and len(evaluations) == 12 + 6 * 2
    full = aggregates[("standardizer FBDM+RPIM", "psnr")]
    assert full["value"] == pytest.approx(report.ablation.rows[1].psnr) and full["stage"] == "standardizer"
    assert json.loads(full["details"])["train_steps"] == 2
    run = lake.read("runs", filter="stage = 'ablate-standardizer'").to_pylist()[0]
    assert run["status"] == "completed" and len(json.loads(run["metrics"])["table"]) == 6

    # a second run reuses the trained variants (no new steps) and adds its own rows
    again = run_ablate_standardizer(settings, eval_pairs=2, variants=["FBDM+RPIM"], log=lambda _: None)
    assert again.ablation.rows[0].steps == 2
    assert again.ablation.rows[0].psnr == pytest.approx(report.ablation.rows[1].psnr)
