"""Standardizer model, pipeline and training (tiny profile, CPU, deterministic)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from serialgen.checkpoints import standardizer_dir
from serialgen.models import Standardizer, load_sd15_components, tiny_components
from serialgen.models.token_positions import fourier_features
from serialgen.compositing.split import split_of
from serialgen.pipelines import StandardizationPipeline
from serialgen.standard_skeleton import canonical_skeleton
from serialgen.stages.train_standardizer import run_train_standardizer
from serialgen.storage.images import encode_mask, encode_png
from serialgen.storage.torch_reader import PairsDataset
from serialgen.config import StandardizerSettings
from serialgen.training.colour import band_colours, recolour_jointly
from serialgen.training.metrics import psnr, ssim
from serialgen.training.standardizer import colour_embedding_loss, diffusion_loss, self_referenced, train_standardizer

H, W = 48, 32
COLOURS = [(200, 40, 40), (40, 90, 200), (30, 160, 60), (220, 170, 30)]


def _figure(colour, box, background) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A drawn 'character' (torso + head) in ``box`` on ``background``: image, background mask, pose drawing."""
    x0, y0, x1, y1 = box
    image = Image.fromarray(background)
    mask = Image.new("L", (W, H), 255)
    pose = Image.new("RGB", (W, H))
    head = (x0 + (x1 - x0) // 4, y0, x1 - (x1 - x0) // 4, y0 + (y1 - y0) // 4)
    for canvas, fill in ((ImageDraw.Draw(image), colour), (ImageDraw.Draw(mask), 0)):
        canvas.ellipse(head, fill=fill)
        canvas.rectangle((x0, head[3], x1, y1), fill=fill)
    cx = (x0 + x1) // 2
    ImageDraw.Draw(pose).line((cx, head[1], cx, y1), fill=(255, 0, 0), width=3)
    ImageDraw.Draw(pose).line((x0, head[3] + 4, x1, head[3] + 4), fill=(0, 255, 0), width=3)
    return np.asarray(image), np.asarray(mask), np.asarray(pose)


def make_pairs(lake, n: int, test: int = 0, seed: int = 0) -> None:
    """``n`` train + ``test`` test pairs of drawn figures: shifted on a noisy background -> centred on white."""
    rng = np.random.default_rng(seed)
    rows, standards, white = [], [], np.full((H, W, 3), 255, np.uint8)
    keypoints = np.zeros((18, 3), np.float32).tolist()
    for i in range(n + test):
        colour = COLOURS[i % len(COLOURS)]
        background = (rng.uniform(0, 255, (1, 1, 3)) + rng.normal(0, 20, (H, W, 3))).clip(0, 255).astype(np.uint8)
        dx, dy = rng.integers(-6, 6), rng.integers(-5, 5)
        image, mask, pose = _figure(colour, (8 + dx, 10 + dy, 20 + dx, 38 + dy), background)
        target, target_mask, target_pose = _figure(colour, (10, 6, 22, 42), white)
        rows.append({
            "pair_id": f"p{i}", "character_id": f"c{i}", "pose_id": "pose", "view_id": 0, "background_id": "bg",
            "split": "train" if i < n else "test", "input_image": encode_png(image),
            "background_mask": encode_mask(mask), "reference_keypoints": keypoints,
            "reference_pose_image": encode_png(pose),
            "true_background_mask": encode_mask(mask), "true_reference_keypoints": keypoints, "augmentation": "{}",
        })
        standards.append({"character_id": f"c{i}", "image": encode_png(target), "mask": encode_mask(255 - target_mask),
                          "keypoints": keypoints, "pose_image": encode_png(target_pose), "width": W, "height": H})
    lake.upsert("standards", standards, "test")
    lake.upsert("pairs", rows, "test")


def _batch(size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"reference": torch.rand(size, 3, H, W, generator=g) * 2 - 1,
            "mask": (torch.rand(size, 1, H, W, generator=g) > 0.5).float(),
            "reference_pose": torch.rand(size, 3, H, W, generator=g),
            "target_pose": torch.rand(size, 3, H, W, generator=g)}


def _predict(model: Standardizer, batch: dict[str, torch.Tensor], keep=None) -> torch.Tensor:
    latents = model.encode_images(batch["reference"])
    embeds = model.embed_images(batch["reference"])
    noisy = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    return model(noisy, torch.tensor([10, 700]), latents, embeds, batch["mask"], batch["reference_pose"],
                 batch["target_pose"], keep)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> Standardizer:
    return Standardizer.from_components(tiny_components(seed=0)).eval()


def test_denoiser_reads_reference_and_equals_plain_unet_with_empty_bank(model):
    torch.manual_seed(0)
    for p in model.trainable_parameters():  # leave the zero-init: make every path count
        p.data.add_(torch.randn_like(p) * 0.02)
    batch = _batch()
    with torch.no_grad():
        out = _predict(model, batch)
        other = _predict(model, {**batch, "reference": batch["reference"].flip(-1)})
        dropped = _predict(model, batch, keep=torch.tensor([True, False]))
        assert not torch.allclose(out, other, atol=1e-4)
        assert torch.allclose(out[0], dropped[0], atol=1e-5) and not torch.allclose(out[1], dropped[1], atol=1e-4)

        model.bank.clear()
        latents = torch.randn(model.encode_images(batch["reference"]).shape)
        embeds = torch.randn(2, 1, 32)
        ours = model.denoising_unet(latents, torch.tensor([5, 50]), encoder_hidden_states=embeds).sample
        plain = type(model.denoising_unet).from_config(model.denoising_unet.config)
        plain.load_state_dict(model.denoising_unet.state_dict())
        assert torch.equal(ours, plain(latents, torch.tensor([5, 50]), encoder_hidden_states=embeds).sample)


@pytest.mark.parametrize("fbdm,rpim", [(True, True), (False, True), (True, False), (False, False)])
def test_fbdm_rpim_receive_gradients_and_vanish_when_off(fbdm, rpim):
    model = Standardizer.from_components(tiny_components(seed=0), fbdm=fbdm, rpim=rpim)
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert ("fbdm" in names) == fbdm and ("rpim" in names) == rpim
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    for _ in range(2):  # the zero-initialised convs pass gradients upstream from the second step on
        optimizer.zero_grad()
        _predict(model, _batch()).square().mean().backward()
        optimizer.step()
    # Cross-attention sees one image-embedding token: softmax over one key is 1, so its query/key
    # path (norm2, attn2.to_q, attn2.to_k) has exactly zero gradient by construction.
    constant = ("norm2.", "attn2.to_q.", "attn2.to_k.")
    missing = [n for n, p in model.named_parameters() if p.requires_grad and not any(c in n for c in constant)
               and (p.grad is None or not p.grad.any())]
    assert missing == []
    assert all(not p.requires_grad for p in (*model.vae.parameters(), *model.image_encoder.parameters()))


def test_modules_start_neutral_on_pretrained_unets_and_active_from_scratch():
    """Zero-initialised FBDM/RPIM leave a pretrained ReferenceNet unchanged; from scratch they act from step 0."""
    batch = _batch()
    outputs = {}
    for name, fbdm, rpim, pretrained in (("plain", False, False, True), ("pretrained", True, True, True),
                                         ("scratch", True, True, False)):
        model = Standardizer.from_components(tiny_components(seed=0), fbdm=fbdm, rpim=rpim,
                                             pretrained=pretrained).eval()
        with torch.no_grad():
            model.write_reference(model.encode_images(batch["reference"]), model.embed_images(batch["reference"]),
                                  batch["mask"], batch["reference_pose"])
        outputs[name] = torch.cat([f.flatten() for _, f in sorted(model.bank.features.items())])
    assert torch.equal(outputs["pretrained"], outputs["plain"])
    changed = (outputs["scratch"] - outputs["plain"]).abs().mean() / outputs["plain"].abs().mean()
    assert changed > 0.1  # the modules' additions are of the tokens' own scale, not a rounding error


def test_scratch_sampling_starts_from_the_last_training_step(model):
    """Trailing DDIM steps: the first step sees pure noise (t = 999), and one step is the model's x0 estimate."""
    scheduler = model.inference_scheduler()
    for steps, first in ((1, [999]), (3, [999, 666, 332])):
        scheduler.set_timesteps(steps)
        assert scheduler.timesteps.tolist() == first
    scheduler.set_timesteps(20)
    assert scheduler.timesteps[0].item() == 999 and scheduler.timesteps[-1].item() == 49


def test_gradient_checkpointing_gives_identical_gradients():
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = Standardizer.from_components(tiny_components(seed=0)).train()
        torch.manual_seed(0)
        for p in model.trainable_parameters():
            p.data.add_(torch.randn_like(p) * 0.02)
        if checkpointing:
            model.enable_gradient_checkpointing()
        _predict(model, _batch(), keep=torch.tensor([True, False])).square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)


def test_save_load_gives_identical_outputs(model, tmp_path):
    model.standard_pose = np.zeros((H, W, 3), np.uint8)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "rpim" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = Standardizer.from_pretrained(tmp_path / "m").eval()
    batch = _batch()
    with torch.no_grad():
        assert torch.equal(_predict(model, batch), _predict(loaded, batch))
    reference = np.random.default_rng(0).integers(0, 255, (60, 35, 3), np.uint8)
    mask, pose = np.zeros((60, 35), np.uint8), np.zeros((60, 35, 3), np.uint8)
    first = StandardizationPipeline(model)(reference, mask, pose, num_inference_steps=3, seed=3)
    second = StandardizationPipeline(loaded)(reference, mask, pose, num_inference_steps=3, seed=3)
    assert first[0].shape == (H, W, 3) and first[0].dtype == np.uint8
    # The frozen image encoder, built vs loaded, can differ by ~1e-7 (kernel choice): at most one grey level.
    assert np.abs(first[0].astype(int) - second[0]).max() <= 1


def test_token_positions_mark_each_token_place_on_both_sides_and_survive_save_load(tmp_path):
    """The first stored reference tokens differ from a model without positions by exactly the projection of
    their own grid's Fourier features; the denoiser reads them too; the module trains and round-trips."""
    batch = _batch()
    plain = Standardizer.from_components(tiny_components(seed=0), pretrained=False).eval()
    placed = Standardizer.from_components(tiny_components(seed=0), pretrained=False, token_positions=True).eval()
    with torch.no_grad():
        for model in (plain, placed):
            model.write_reference(model.encode_images(batch["reference"]), model.embed_images(batch["reference"]),
                                  batch["mask"], batch["reference_pose"])
        grid = model.encode_images(batch["reference"]).shape[-2:]
        features = fourier_features(*grid, placed.positions.config.frequencies)
        assert len(set(map(tuple, features.tolist()))) == grid[0] * grid[1]  # every token its own place
        offset = placed.positions.projections[0](features)
        assert torch.allclose(placed.bank.features[0] - plain.bank.features[0], offset.expand(2, -1, -1), atol=1e-5)
    placed.train()
    _predict(placed, batch).square().mean().backward()
    assert all(p.grad is not None and p.grad.any() for p in placed.positions.parameters())
    placed.eval().save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "standardizer.json").read_text())["positions"] is True
    loaded = Standardizer.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(_predict(placed, batch), _predict(loaded, batch))
        placed.positions.projections[-1].weight.zero_()  # one layer's places gone: another output
        placed.positions.projections[-1].bias.zero_()
        assert not torch.allclose(_predict(placed, batch), _predict(loaded, batch), atol=1e-5)


def test_sd15_without_local_weights_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="standardizer.model_dir"):
        load_sd15_components(None, None)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"unet/diffusion_pytorch_model\.safetensors"):
        load_sd15_components(tmp_path, tmp_path / "vae")


def test_metrics_have_explicit_range():
    a = torch.rand(2, 3, 32, 24)
    assert torch.isinf(psnr(a, a)).all() and torch.allclose(ssim(a, a), torch.ones(2))
    assert psnr(a * 255, (a + 0.1) * 255, data_range=255).allclose(psnr(a, a + 0.1))


def _fixed_loss(model: Standardizer, data: PairsDataset, cfg) -> float:
    """The training loss of all pairs at fixed noise and timesteps: comparable before and after training."""
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        return sum(diffusion_loss(model, model, model.training_scheduler(), batch, cfg,
                                  torch.Generator().manual_seed(seed), torch.device("cpu")).item()
                   for seed in range(4)) / 4


def test_high_noise_share_draws_that_share_from_the_noisier_half(settings, lake, monkeypatch):
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    batch = torch.utils.data.default_collate([data[i % 2] for i in range(64)])
    model = _with_skeleton(Standardizer.from_components(tiny_components(seed=0)))
    scheduler, drawn = model.training_scheduler(), []
    add_noise = scheduler.add_noise
    monkeypatch.setattr(scheduler, "add_noise", lambda x, n, t: drawn.append(t) or add_noise(x, n, t))
    for share in (0.0, 1.0):
        cfg = settings.standardizer.model_copy(update={"high_noise_share": share})
        with torch.no_grad():
            diffusion_loss(model, model, scheduler, batch, cfg, torch.Generator().manual_seed(0), torch.device("cpu"))
    uniform, noisy = drawn
    assert (noisy >= 500).all() and 16 < (uniform >= 500).sum() < 48


def test_self_reference_gives_that_share_of_pairs_their_own_standard_view_as_reference(settings, lake):
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    batch = torch.utils.data.default_collate([data[i % 2] for i in range(64)])
    white = (batch["target_image"] == 1).all(1, keepdim=True).float()
    assert torch.equal(batch["target_background_mask"], white)  # the standard's mask, read as background = 1
    sides = ("input_image", "background_mask", "reference_pose_image")
    own = ("target_image", "target_background_mask", "target_pose_image")
    generator = torch.Generator().manual_seed(0)
    unchanged = self_referenced(batch, 0.0, generator)
    assert all(torch.equal(x, batch[k]) for x, k in zip(unchanged, sides))
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())  # no draw at share 0
    mixed = self_referenced(batch, 0.5, generator)
    chosen = (mixed[0] == batch["target_image"]).flatten(1).all(1)
    assert 16 < chosen.sum() < 48
    for x, side, target in zip(mixed, sides, own):
        assert torch.equal(x[chosen], batch[target][chosen]) and torch.equal(x[~chosen], batch[side][~chosen])


def test_colour_augment_turns_the_reference_and_its_target_together(settings, lake, monkeypatch):
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    batch = torch.utils.data.default_collate([data[0], data[1]])
    model = _with_skeleton(Standardizer.from_components(tiny_components(seed=0)))
    seen: list[torch.Tensor] = []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda images, *a, **k: seen.append(images.clone()) or encode(images))
    for share in (0.0, 1.0):
        cfg = settings.standardizer.model_copy(update={"colour_augment": share})
        with torch.no_grad():
            diffusion_loss(model, model, model.training_scheduler(), batch, cfg, torch.Generator().manual_seed(0),
                           torch.device("cpu"))
    (plain_target, plain_reference), (target, reference) = seen[:2], seen[2:]
    assert torch.equal(plain_target, batch["target_image"]) and torch.equal(plain_reference, batch["input_image"])
    assert (target - plain_target).abs().amax() > 0.2 and (reference - plain_reference).abs().amax() > 0.2
    grey = (plain_target.amax(1) - plain_target.amin(1)) < 1e-6  # white background: the same after the turn
    assert grey.any() and torch.allclose(target.permute(0, 2, 3, 1)[grey], plain_target.permute(0, 2, 3, 1)[grey],
                                         atol=1e-5)
    # the pair's one turn, drawn first from the step's generator (tests/test_colour_augment.py: one turn per pair)
    expected_reference, expected_target = recolour_jointly([batch["input_image"], batch["target_image"]], 1.0,
                                                           torch.Generator().manual_seed(0))
    assert torch.equal(target, expected_target) and torch.equal(reference, expected_reference)


def _with_skeleton(model: Standardizer) -> Standardizer:
    model.set_standard_skeleton(canonical_skeleton(W, H), W, H)
    return model


def test_training_validation_and_inference_feed_the_one_standard_pose(settings, lake):
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    batch = torch.utils.data.default_collate([data[0], data[1]])
    torch.manual_seed(0)
    model = _with_skeleton(Standardizer.from_components(tiny_components(seed=0)))
    for p in model.trainable_parameters():  # leave the zero-init: the pose guider must matter
        p.data.add_(torch.randn_like(p) * 0.02)
    cfg = settings.standardizer.model_copy(update={"reference_dropout": 0.0})
    loss = lambda b: diffusion_loss(model, model, model.training_scheduler(), b, cfg,  # noqa: E731
                                    torch.Generator().manual_seed(0), torch.device("cpu")).item()
    # Training never reads a pair's own skeleton: the model's standard pose is every pair's target.
    own_skeleton = loss(batch)
    assert own_skeleton == loss({**batch, "target_pose_image": torch.rand_like(batch["target_pose_image"])})
    expected = model.target_pose(2)
    assert torch.equal(expected[0], torch.from_numpy(np.array(model.standard_pose)).permute(2, 0, 1).float() / 255)
    # Inference's default target is the same tensor (the standardize stage passes none).
    images = [((batch["input_image"][i].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for i in range(2)]
    masks = [(batch["background_mask"][i, 0] * 255).byte().numpy() for i in range(2)]
    poses = [(batch["reference_pose_image"][i].permute(1, 2, 0) * 255).round().byte().numpy() for i in range(2)]
    pipeline = StandardizationPipeline(model)
    run = lambda target: pipeline(images, masks, poses, target, num_inference_steps=2, seed=0)  # noqa: E731
    default, standard = run(None), run(model.standard_pose)
    assert all(np.array_equal(a, b) for a, b in zip(default, standard))
    other = (batch["target_pose_image"][0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert not all(np.array_equal(a, b) for a, b in zip(default, run(other)))
    # Trained from a lake, the target is the mean skeleton of the training characters' standard views.
    from serialgen.stages.train_standardizer import build_standardizer

    rng = np.random.default_rng(0)
    stored = [{**row, "keypoints": np.c_[rng.uniform(0, 60, (18, 2)), np.ones(18)].tolist(), "width": 64 + 32 * i,
               "height": 96 + 48 * i} for i, row in enumerate(lake.read("standards").to_pylist())]
    lake.upsert("standards", [{k: v for k, v in r.items() if k not in ("run_id", "written_at")} for r in stored], "t")
    built = build_standardizer(settings)
    mean = np.mean([np.asarray(r["keypoints"])[:, :2] * (settings.standardizer.width / r["width"],
                                                         settings.standardizer.height / r["height"]) for r in stored
                    if split_of(r["character_id"], settings.composite.test_fraction) == "train"], 0)
    assert np.allclose(built.standard_keypoints[:, :2], mean, atol=1e-3)
    assert not np.allclose(mean, canonical_skeleton(settings.standardizer.width, settings.standardizer.height)[:, :2],
                           atol=1.0)


def test_overfit_two_pairs_lowers_loss(settings, lake, tmp_path):
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    cfg = settings.standardizer.model_copy(update={
        "steps": 60, "learning_rate": 2e-3, "reference_dropout": 0.0, "noise_offset": 0.0, "snr_gamma": None,
        "checkpoint_every": 1000, "validation_pairs": 0, "num_workers": 0})
    model = _with_skeleton(Standardizer.from_components(tiny_components(seed=0)))
    before = _fixed_loss(model, data, cfg)
    result = train_standardizer(model, data, cfg, tmp_path / "run")
    after = _fixed_loss(model, data, cfg)
    assert result.step == 60 and len(result.losses) == 60
    assert after < before / 4, (before, after)


def test_train_image_encoder_trains_the_cross_attention_encoder_and_exports_it(settings, lake, tmp_path):
    """Off (the paper: a frozen CLIP), the encoder's weights stay as built; on, training changes them, the
    embedding carries gradients in training only, and the exported model holds the trained encoder."""
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    cfg = settings.standardizer.model_copy(update={
        "steps": 3, "learning_rate": 1e-3, "checkpoint_every": 1000, "validation_pairs": 0, "num_workers": 0,
        "ema_decay": None})
    reference = _batch()["reference"]
    for trained in (False, True):
        model = _with_skeleton(Standardizer.from_components(tiny_components(seed=0), train_image_encoder=trained))
        built = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
        assert model.embed_images(reference).requires_grad is trained
        with torch.no_grad():
            assert not model.embed_images(reference).requires_grad
        result = train_standardizer(model, data, cfg.model_copy(update={"train_image_encoder": trained}),
                                    tmp_path / f"run-{trained}")
        weights = model.image_encoder.state_dict()
        changed = {k for k, v in weights.items() if not torch.equal(v, built[k])}
        assert ("visual_projection.weight" in changed) is trained and (not changed) is (not trained)
        exported = Standardizer.from_pretrained(result.model_dir).image_encoder.state_dict()
        assert all(torch.equal(exported[k], v) for k, v in weights.items())


def test_colour_embedding_loss_asks_the_embedding_for_the_target_band_colours(settings, lake, monkeypatch):
    """The term is zero for an embedding holding the band colours, grows with their error, and diffusion_loss
    adds exactly ``weight`` times it, computed on the embedding the denoiser reads; it needs a trained encoder."""
    with pytest.raises(ValueError, match="train_image_encoder"):
        StandardizerSettings(colour_embedding=1.0)
    make_pairs(lake, 2)
    data = PairsDataset(lake, "train", size=(H, W))
    batch = torch.utils.data.default_collate([data[0], data[1]])
    foreground = batch["target_background_mask"][:, 0] < 0.5
    colours = torch.stack([band_colours(t, f)[0] for t, f in zip(batch["target_image"], foreground)])
    assert colours.std(0).amax() > 0.1  # two characters, two sets of colours
    exact = torch.cat([colours.flatten(1), torch.zeros(2, 7)], 1)[:, None]
    assert colour_embedding_loss(exact, batch["target_image"], foreground) == 0
    exact[1, 0, 4] += 0.3  # one channel of one band of one image: 0.09 / 3 channels / 6 bands
    assert torch.isclose(colour_embedding_loss(exact, batch["target_image"], foreground), torch.tensor(0.005))
    model = _with_skeleton(Standardizer.from_components(tiny_components(seed=0), train_image_encoder=True))
    seen: list[torch.Tensor] = []
    embed = model.embed_images
    monkeypatch.setattr(model, "embed_images", lambda images: seen.append(embed(images)) or seen[-1])
    losses = []
    for weight in (0.0, 2.0):
        cfg = settings.standardizer.model_copy(update={"train_image_encoder": True, "colour_embedding": weight})
        with torch.no_grad():
            losses.append(diffusion_loss(model, model, model.training_scheduler(), batch, cfg,
                                         torch.Generator().manual_seed(0), torch.device("cpu")))
    term = colour_embedding_loss(seen[-1], batch["target_image"], foreground)
    assert term > 0.01 and torch.isclose(losses[1] - losses[0], 2 * term, atol=1e-6)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(settings, lake):
    make_pairs(lake, 4, test=1)
    base = {"steps": 4, "batch_size": 2, "width": W, "height": H, "checkpoint_every": 2, "validation_pairs": 1,
            "inference_steps": 2, "ema_decay": 0.9}
    straight = settings.model_copy(update={"standardizer": settings.standardizer.model_copy(
        update={**base, "run_name": "straight"})})
    split = settings.model_copy(update={"standardizer": settings.standardizer.model_copy(
        update={**base, "run_name": "split"})})
    full = run_train_standardizer(straight)
    first = run_train_standardizer(split, stop_at=3)
    assert first.step == 3 and first.model_dir is None and first.checkpoint.name.endswith("0000003")
    second = run_train_standardizer(split)
    assert (second.resumed_from, second.step) == (3, 4)
    assert full.losses[3:] == second.losses
    a = Standardizer.from_pretrained(full.model_dir).state_dict()
    b = Standardizer.from_pretrained(second.model_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    runs = lake.read("runs", filter="stage = 'train-standardizer' AND status = 'completed'").to_pylist()
    assert len(runs) == 3
    last = max(runs, key=lambda r: r["finished_at"])
    metrics = json.loads(last["metrics"])
    assert last["checkpoint"] == str(second.model_dir) and second.grid.is_file()
    # the recorded scores are those of the validation grid's standardized column against its target column
    grid = torch.from_numpy(np.asarray(Image.open(second.grid))).permute(2, 0, 1)[None].float() / 255
    target, standardized = grid[..., 2 * W:3 * W], grid[..., 3 * W:]
    assert metrics["val_pairs"] == 1 and grid.shape[-2:] == (H, 4 * W)
    assert metrics["val_psnr"] == pytest.approx(psnr(standardized, target).item(), abs=0.1)
    assert metrics["val_ssim"] == pytest.approx(ssim(standardized, target).item(), abs=0.01)
    assert (standardizer_dir(split) / "logs").is_dir()
    assert len(list(standardizer_dir(split).glob("checkpoint-*"))) == 2
    restored = StandardizationPipeline.from_pretrained(second.model_dir)
    assert restored.model.standard_pose.shape == (H, W, 3)


def test_new_training_data_starts_over_instead_of_resuming(settings, lake):
    make_pairs(lake, 2)
    tiny = settings.model_copy(update={"standardizer": settings.standardizer.model_copy(update={
        "steps": 2, "batch_size": 2, "width": W, "height": H, "checkpoint_every": 1, "validation_pairs": 0,
        "num_workers": 0})})
    assert run_train_standardizer(tiny).step == 2
    again = run_train_standardizer(tiny)                      # same data: the finished run is resumed
    assert (again.resumed_from, again.step) == (2, 2)
    make_pairs(lake, 3, seed=1)                               # the DAG reran upstream: new `pairs` version
    fresh = run_train_standardizer(tiny)
    assert (fresh.resumed_from, fresh.step, fresh.train_pairs) == (0, 2, 3)


@pytest.mark.slow
def test_flow_trains_and_publishes(settings, lake, prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    from serialgen.flows.train_standardizer import train_standardizer as flow

    make_pairs(lake, 2, test=1)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"standardizer": {"width": W, "height": H, "validation_pairs": 1,
                                                   "inference_steps": 2, "checkpoint_every": 10}}))
    result = flow(lake=settings.lake, config=str(config), steps=2)
    assert result["step"] == 2 and result["val_pairs"] == 1

    async def artifact_keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    import asyncio

    assert {"standardizer-metrics", "standardizer-validation-grid"} <= asyncio.run(artifact_keys())
    run = lake.read("runs", filter="stage = 'train-standardizer'").to_pylist()[0]
    assert run["status"] == "completed" and run["flow_run_id"] and run["checkpoint"] == result["model_dir"]
    assert result["psnr"] == json.loads(run["metrics"])["val_psnr"]   # the flow returns what the run recorded


@pytest.mark.slow
def test_cli_sd15_without_weights_is_one_line_error(settings, lake, prefect_harness):
    from typer.testing import CliRunner

    from serialgen.cli import app

    make_pairs(lake, 2)
    result = CliRunner().invoke(app, ["--lake", settings.lake, "--profile", "sd15", "train-standardizer"])
    assert result.exit_code == 2
    last_line = result.output.strip().splitlines()[-1]  # Prefect logs the task's traceback above it
    assert last_line.startswith("error:") and "standardizer.model_dir" in last_line
    assert lake.count("runs") == 0


def test_accelerate_entry_point_trains_and_records(settings, lake, tmp_path, capsys):
    from serialgen.stages.train_standardizer import main

    make_pairs(lake, 2)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"standardizer": {"width": W, "height": H, "validation_pairs": 0}}))
    main(["--lake", settings.lake, "--config", str(config), "--steps", "2"])
    assert "step 2" in capsys.readouterr().out
    run = lake.read("runs").to_pylist()[0]
    assert run["status"] == "completed" and json.loads(run["metrics"])["val_pairs"] == 0


def test_dynamic_compositing_trains_with_fresh_augmentations_per_epoch(settings, lake):
    from composite_data import write_characters

    from serialgen.compositing.backgrounds import procedural_background_png
    from serialgen.compositing.dynamic import DynamicPairs
    from serialgen.training.data import EpochItems

    write_characters(lake, 4, 2, width=W, height=H)
    lake.upsert("backgrounds", [{"background_id": f"bg{i}", "source_uri": f"procedural://0/{i}", "width": 48,
                                 "height": 72, "image": procedural_background_png(0, i, 48, 72)} for i in range(3)],
                "test")
    dynamic = settings.model_copy(update={
        "composite": settings.composite.model_copy(update={"dynamic": True, "test_fraction": 0.0}),
        "standardizer": settings.standardizer.model_copy(update={
            "steps": 2, "width": W, "height": H, "num_workers": 0, "validation_pairs": 0})})
    items = EpochItems(DynamicPairs(lake, dynamic, "train", size=(H, W)))
    first, again, later = items[(0, 0)], items[(0, 0)], items[(1, 0)]
    assert torch.equal(first["input_image"], again["input_image"])
    assert not torch.equal(first["input_image"], later["input_image"])
    assert torch.equal(first["target_image"], later["target_image"])

    report = run_train_standardizer(dynamic)
    assert report.step == 2 and report.train_pairs == 8
    run = lake.read("runs", filter="stage = 'train-standardizer'").to_pylist()[0]
    assert set(json.loads(run["inputs"])) == {"renders", "standards", "backgrounds"}


def test_attention_levels_put_reference_attention_on_that_many_levels():
    from serialgen.models.components import scratch_components
    from serialgen.models.reference_attention import self_attention_layers

    def levels(parts) -> set[int]:  # resolution levels (down-block index) whose blocks hold reference attention
        return {int(name.split(".")[1]) for name, _ in self_attention_layers(parts.reference_unet)
                if name.startswith("down_blocks.")}

    assert levels(scratch_components(block_out_channels=(32, 64))) == {0}            # default: all but the lowest
    assert levels(scratch_components(block_out_channels=(32, 64), attention_levels=2)) == {0, 1}
    model = Standardizer.from_components(scratch_components(block_out_channels=(32, 64), attention_levels=2))
    assert len(model.layer_channels) == len(self_attention_layers(model.denoising_unet))
