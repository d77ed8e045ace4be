"""The personalizer's base model and the synthetic Table 2: captions from render metadata, a pixel-space
SDXL-shaped base that stock diffusers runs, the train-base stage on a real rendered lake, the modes' pairs,
and an adapter whose output follows its reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serialgen.models.sdxl import load_sdxl_parts, pixel_configs, random_sdxl_parts, write_sdxl_folders
from serialgen.synthetic.labelled import labelled_images
from serialgen.synthetic.character_spec import sample_spec
from serialgen.synthetic.vocabulary import PHRASES, appearance, background_label, caption, colour_name, framing_label
from serialgen.training.captioned import CaptionedImage, captioned
from serialgen.training.synthetic_pairs import same_character_references, source_images, training_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL_UNET = dict(channels=(16, 32), patch_size=4)


def test_captions_say_what_the_render_metadata_says(synthetic_lake):
    lake = synthetic_lake.open_lake()
    renders = {(r["character_id"], r["pose_id"], r["view_id"]): r
               for r in lake.read("renders", columns=["character_id", "pose_id", "view_id", "framing", "keypoints"]).to_pylist()}
    kinds = {r["background_id"]: background_label(r["source_uri"])
             for r in lake.read("backgrounds", columns=["background_id", "source_uri"]).to_pylist()}
    pairs = {r["pair_id"]: r for r in lake.read("pairs", columns=["pair_id", "character_id", "pose_id", "view_id",
                                                                  "background_id", "true_reference_keypoints"]).to_pylist()}
    framed = []
    items = list(labelled_images(lake))
    assert {i.source for i in items} == {"render", "pair", "standard"}
    assert len(items) == lake.count("renders") + lake.count("pairs") + lake.count("standards")
    for item in items:
        if item.source == "standard":
            assert item.labels == {"framing": "full", "view": "front", "background": "plain", "action": "standing"}
        elif item.source == "render":
            _, character, pose, view = item.key.split("/")
            assert item.labels["framing"] == framing_label(renders[(character, pose, int(view))]["framing"])
            assert item.labels["background"] == "plain"
        else:
            pair = pairs[item.key.split("/", 1)[1]]
            assert item.labels["background"] == kinds[pair["background_id"]]
            render = renders[(pair["character_id"], pair["pose_id"], pair["view_id"])]
            if render["framing"] == "full":   # cut off: a joint the render showed is out of the pair's frame
                lost = any(r[2] > 0 and p[2] == 0 for r, p in zip(render["keypoints"], pair["true_reference_keypoints"]))
                framed.append((item.labels["framing"], lost))
                assert item.labels["framing"] == ("cutoff" if lost else "full")
        assert item.labels["action"] in PHRASES["action"] and item.labels["view"] in PHRASES["view"]
        assert item.rgb.shape[:2] == item.foreground.shape and item.foreground.max() == 255
    assert {f for f, _ in framed} == {"full", "cutoff"}, "the lake's crops cut joints off some full-body pairs"


def test_appearance_words_name_what_the_procedural_spec_draws():
    assert [colour_name(c) for c in ((0.9, 0.02, 0.02), (0.01, 0.05, 0.7), (0.02, 0.4, 0.03), (0.004, 0.004, 0.004),
                                     (0.9, 0.9, 0.9), (0.25, 0.25, 0.25), (0.9, 0.25, 0.0), (0.9, 0.3, 0.45))] == [
        "red", "blue", "green", "black", "white", "grey", "orange", "pink"]
    spec = {"hair_color": (0.85, 0.70, 0.40), "hair_style": "ponytail", "top": "jacket", "top_color": (0.02, 0.4, 0.03),
            "bottom": "skirt", "bottom_color": (0.9, 0.02, 0.02)}
    words = appearance(spec)
    assert words == {"hair_colour": "blond", "hair_style": "ponytail", "top": "jacket", "top_colour": "green",
                     "bottom": "skirt", "bottom_colour": "red"}
    assert caption({"framing": "bust", "view": "side"}, looks=words) == (
        "a character with blond ponytail hair, green jacket, red skirt, bust shot, side view")
    assert "skirt" not in caption({}, looks=appearance({**spec, "top": "dress"}))  # a dress hides the bottom


def test_the_tiny_tokenizers_keep_every_caption_word_whole(tmp_path):
    parts = random_sdxl_parts(tmp_path, pixel_configs(**SMALL_UNET))
    rng = np.random.default_rng(0)
    looks = [appearance(sample_spec(int(seed)).to_json()) for seed in rng.integers(0, 10_000, 40)]
    labels = {"framing": "cutoff", "view": "back", "action": "waving", "background": "texture"}
    for words in looks:
        text = caption(labels, looks=words)
        tokens = parts.tokenizer.tokenize(text)
        assert "".join(tokens).replace("</w>", "") == text.replace(" ", "")
        assert len(tokens) == len(text.replace(",", " ,").split())  # one token per word or comma


def test_a_share_of_base_captions_name_the_appearance(synthetic_lake):
    items = list(labelled_images(synthetic_lake.open_lake(), sources=("standard",)))
    assert items and all(i.looks is not None for i in items)
    none, half, every = (captioned(items, (24, 16), share) for share in (0.0, 0.5, 1.0))
    assert all(" with " not in i.caption for i in none)
    assert all(c.caption.startswith(f"a character with {i.looks['hair_colour']} ") for c, i in zip(every, items))
    described = [c.key for c in half if " with " in c.caption]
    assert described == [c.key for c in captioned(items, (24, 16), 0.5) if " with " in c.caption]  # stable choice
    assert 0 < len(described) < len(items) or len(items) < 4


def _captioned(character: str, key: str, source: str) -> CaptionedImage:
    return CaptionedImage(character, key, source, {}, "a character", torch.zeros(3, 8, 8, dtype=torch.uint8), (8, 8))


def test_the_paired_modes_share_targets_and_one_source_image_per_character():
    images = [_captioned(c, f"{kind}/{c}{k}", kind) for c in "ab" for k in range(3) for kind in ("render", "pair")]
    images.append(_captioned("c", "render/c0", "render"))          # no composited pair: no source
    sources = source_images(images)
    assert set(sources) == {"a", "b"} and all(images[i].source == "pair" for i in sources.values())
    two_stage, paired = training_pairs(images, "two_stage"), training_pairs(images, "paired_one_stage")
    assert two_stage == paired
    targets, references = two_stage
    assert len(targets) == 10 and not set(targets) & set(sources.values())
    assert all(images[t].character_id == images[r].character_id for t, r in zip(targets, references))
    assert training_pairs(images, "unpaired") == (list(range(13)), list(range(13)))
    with pytest.raises(ValueError, match="unknown personalizer mode"):
        training_pairs(images, "zero_shot")


def test_the_base_image_path_gives_each_image_another_image_of_its_character():
    images = [_captioned(c, f"{kind}/{c}{k}", kind) for c in "ab" for k in range(3) for kind in ("render", "pair")]
    images.append(_captioned("c", "render/c0", "render"))          # alone with its character: its own reference
    references = same_character_references(images)
    assert [images[r].character_id for r in references] == [i.character_id for i in images]
    assert all(r != i for i, r in enumerate(references[:12])) and references[12] == 12
    assert sorted(references[:6]) == list(range(6)) and sorted(references[6:12]) == list(range(6, 12))  # a cycle


def test_pixel_space_base_runs_in_stock_sdxl_and_round_trips_through_the_loader(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    from serialgen.models.pixel_space import PixelShuffleAutoencoder

    base, encoder = write_sdxl_folders(tmp_path, pixel_configs(**SMALL_UNET), scheduler={"prediction_type": "sample"})
    parts = load_sdxl_parts(base, encoder)
    assert isinstance(parts.vae, PixelShuffleAutoencoder) and parts.scheduler_config["prediction_type"] == "sample"
    assert parts.unet.config.in_channels == 48
    pipe = StableDiffusionXLPipeline(vae=parts.vae, text_encoder=parts.text_encoder,
                                     text_encoder_2=parts.text_encoder_2, tokenizer=parts.tokenizer,
                                     tokenizer_2=parts.tokenizer_2, unet=parts.unet,
                                     scheduler=DDIMScheduler(**parts.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 4
    image = pipe(prompt="a character, bust shot", height=96, width=64, num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (96, 64, 3)
    tokens = parts.tokenizer.tokenize("a character, bust shot, cropped by the frame")
    assert tokens[:6] == ["a</w>", "character</w>", ",</w>", "bust</w>", "shot</w>", ",</w>"]  # vocabulary words whole
    assert tokens[-3:] == ["by</w>", "the</w>", "frame</w>"]


def test_adapter_output_follows_the_reference_and_only_through_the_image_tokens(tmp_path):
    """Same prompt and seed: two references give two images, the same reference the same image, and with the
    adapter's scale at 0 (image tokens ignored) the reference changes nothing."""
    from serialgen.models.ip_adapter import save_adapter
    from serialgen.pipelines.personalization import PersonalizationPipeline
    from serialgen.training.personalizer import Personalizer

    base, encoder = write_sdxl_folders(tmp_path, pixel_configs(**SMALL_UNET), scheduler={"prediction_type": "sample"})
    adapter = save_adapter(Personalizer(load_sdxl_parts(base, encoder), 257, seed=0).adapter, tmp_path / "adapter", {})
    pipeline = PersonalizationPipeline(load_sdxl_parts(base, encoder), adapter)
    red, blue = np.full((96, 64, 3), 255, np.uint8), np.full((96, 64, 3), 255, np.uint8)
    red[20:80, 16:48], blue[20:80, 16:48] = (220, 30, 30), (30, 30, 220)

    def draw(reference: np.ndarray, scale: float) -> np.ndarray:
        return pipeline.generate_batch(["a character, full body"], pipeline.embed([reference]), [5], scale, 96, 64, 3,
                                       3.0)[0]

    assert np.abs(draw(red, 1.0).astype(int) - draw(blue, 1.0)).mean() > 1.0
    assert np.array_equal(draw(red, 1.0), draw(red, 1.0))
    assert np.array_equal(draw(red, 0.0), draw(blue, 0.0))
    assert not np.array_equal(draw(red, 1.0), draw(red, 0.0))


@pytest.mark.slow
def test_train_base_learns_from_captioned_renders_and_exports_a_loadable_model(synthetic_lake):
    from safetensors.torch import load_file

    from serialgen.checkpoints import initial_adapter
    from serialgen.compositing.split import split_of
    from serialgen.dag import should_run
    from serialgen.stages.train_base import held_out_losses, run_train_base
    from serialgen.training.base_model import BaseModel
    from serialgen.training.captioned import CaptionedImages, captioned
    from serialgen.training.personalizer import Personalizer

    settings = synthetic_lake.model_copy(update={"base_model": synthetic_lake.base_model.model_copy(update={
        "channels": (16, 32), "steps": 40, "batch_size": 8, "learning_rate": 3e-3, "image_path": True})})
    report = run_train_base(settings)
    held_out = report.metrics["held_out"]
    parts = load_sdxl_parts(report.folder / "model" / "base", report.folder / "model" / "image_encoder")
    assert tuple(parts.unet.config.block_out_channels) == (16, 32) and (report.folder / "samples.png").is_file()
    untrained = random_sdxl_parts(report.folder / "vocab", pixel_configs(channels=(16, 32)), seed=0)
    untrained.scheduler_config.update(prediction_type="sample", beta_schedule="squaredcos_cap_v2",
                                      timestep_spacing="trailing")
    lake = settings.open_lake()
    images = captioned(labelled_images(lake), (96, 64))
    held = [i for i in images if split_of(i.character_id, settings.composite.test_fraction) != "train"][:256]
    before = held_out_losses(BaseModel(untrained).eval(), {"caption": CaptionedImages(held, (untrained.tokenizer,) * 2)},
                             torch.stack([i.pixels for i in images]), settings.base_model.seed)
    assert held_out["caption"] < 0.5 * before["caption"]
    assert should_run(settings, "train-base")[0] is False
    # the image path trained with the UNet: exported beside a text-only base, scored with own/other references,
    # and the adapter every personalizer of this base starts from
    assert parts.unet.config.encoder_hid_dim_type is None
    assert {"caption_and_reference", "caption_and_other_character"} <= set(held_out)
    exported = initial_adapter(settings)
    assert exported == report.folder / "model" / "ip_adapter" / "ip_adapter.safetensors"
    started = Personalizer(parts, settings.personalizer.image_tokens, seed=1, init=exported).adapter.export_state_dict()
    weights = load_file(str(exported))
    assert started.keys() == weights.keys() and all(torch.equal(started[k], weights[k]) for k in weights)
    fresh = Personalizer(load_sdxl_parts(report.folder / "model" / "base", report.folder / "model" / "image_encoder"),
                         settings.personalizer.image_tokens, seed=1).adapter.export_state_dict()
    assert not torch.equal(fresh["image_proj.proj.0.weight"], weights["image_proj.proj.0.weight"])
    # trained again without one (a new definition: --no-resume), no personalizer starts from the old base's path
    text_only = settings.model_copy(update={"base_model": settings.base_model.model_copy(update={
        "image_path": False, "steps": 1})})
    run_train_base(text_only, resume=False)
    assert initial_adapter(text_only) is None and not exported.exists()
