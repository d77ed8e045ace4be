"""Personalizer: tiny SDXL parts through the sdxl loader, the IP-Adapter's stock export, training that
touches only the adapter, exact resume, pairs by mode, and generation (tiny profile, CPU)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import standardize_data
from personalizer_data import STANDARDIZER_VERSION, make_real_and_standardized
from serialgen.checkpoints import content_version, personalizer_dir, sdxl_folders
from serialgen.config import load_settings
from serialgen.models.ip_adapter import WEIGHTS_NAME, install_ip_adapter, pad_to_white_square, reference_processor
from serialgen.models.sdxl import load_sdxl_parts
from serialgen.real_images import pixel_id
from serialgen.inference.generate import GenerateInputError, generate_images, read_prompts, read_reference
from serialgen.stages.train_personalizer import run_train_personalizer, with_overrides
from serialgen.storage.images import decode_image, encode_png
from serialgen.training.personalizer import Personalizer, train_personalizer
from serialgen.training.personalizer_data import CAPTION_TEMPLATES, PersonalizerPairs, build_pairs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sdxl):
    """A lake with 4 train + 2 test characters, the tiny SDXL folders and a two_stage adapter (6 steps)."""
    settings = with_overrides(load_settings(lake=str(tmp_path_factory.mktemp("p") / "lake"),
                                            personalizer=base_folders(tiny_sdxl)), "two_stage", 6)
    make_real_and_standardized(settings.open_lake())
    report = run_train_personalizer(settings)
    return settings, report


def base_folders(folders) -> dict:
    """The random tiny SDXL set as the personalizer's base, and the few-item lakes' batch of 2."""
    return {"model_dir": str(folders[0]), "image_encoder_dir": str(folders[1]), "batch_size": 2}


def _settings_with(settings, **personalizer):
    return settings.model_copy(update={"personalizer": settings.personalizer.model_copy(update=personalizer)})


def test_tiny_parts_are_sdxl_shaped_and_load_through_the_sdxl_loader(trained, tmp_path):
    settings, _ = trained
    base, encoder = sdxl_folders(settings)
    parts = load_sdxl_parts(base, encoder)
    assert parts.unet.config.addition_embed_type == "text_time"
    assert parts.unet.config.cross_attention_dim == (parts.text_encoder.config.hidden_size
                                                     + parts.text_encoder_2.config.hidden_size)
    hidden = parts.image_encoder(torch.zeros(1, 3, 224, 224), output_hidden_states=True).hidden_states[-2]
    assert hidden.shape[1] == 257
    assert (base / "tokenizer" / "vocab.json").is_file() and (base / "tokenizer_2" / "merges.txt").is_file()
    ids = parts.tokenizer("an anime character, full body").input_ids
    assert ids[0] == parts.tokenizer.bos_token_id and ids[-1] == parts.tokenizer.eos_token_id and len(ids) == 8

    broken = tmp_path / "base"
    shutil.copytree(base, broken)
    (broken / "tokenizer_2" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_sdxl_parts(broken, encoder)
    message = str(err.value)
    assert "merges.txt" in message and str(broken / "tokenizer_2") in message and "\n" not in message
    with pytest.raises(FileNotFoundError, match="config.json.*image encoder"):
        load_sdxl_parts(base, tmp_path / "no-encoder")


def test_exported_adapter_loads_in_stock_diffusers_and_matches_ours(trained):
    """Stock ``load_ip_adapter`` on our export gives the very images our pipeline gives; scale 0 changes them."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline
    from PIL import Image

    from serialgen.pipelines.personalization import PersonalizationPipeline

    settings, report = trained
    base, encoder = sdxl_folders(settings)
    weights = load_file(str(report.adapter_dir / WEIGHTS_NAME))
    assert {"image_proj.proj.0.weight", "image_proj.proj.2.weight", "image_proj.proj.3.weight"} <= set(weights)
    parts = load_sdxl_parts(base, encoder)
    cross = [n for n in parts.unet.attn_processors if n.endswith("attn2.processor")]
    assert sorted(k for k in weights if k.startswith("ip_adapter.")) == sorted(
        f"ip_adapter.{2 * i + 1}.{w}.weight" for i in range(len(cross)) for w in ("to_k_ip", "to_v_ip"))

    reference = decode_image(settings.open_lake().read("standardized").column("image")[0].as_py(), "RGB")
    call = dict(prompt="a character in the park", height=96, width=64, num_inference_steps=3, guidance_scale=5.0,
                output_type="np")
    ours = PersonalizationPipeline(parts, report.adapter_dir / WEIGHTS_NAME)
    mine = ours.generate(call["prompt"], ours.embed([reference]), 7, 1.0, 96, 64, 3, 5.0)

    stock = StableDiffusionXLPipeline.from_pretrained(base, local_files_only=True)
    stock.scheduler = DDIMScheduler.from_config(stock.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    stock.load_ip_adapter(str(report.adapter_dir), subfolder="", weight_name=WEIGHTS_NAME,
                          image_encoder_folder=str(encoder), local_files_only=True)
    stock.set_progress_bar_config(disable=True)
    padded = Image.fromarray(pad_to_white_square(reference))
    images = {}
    for scale in (1.0, 0.0):
        stock.set_ip_adapter_scale(scale)
        out = stock(ip_adapter_image=padded, generator=torch.Generator().manual_seed(7), **call).images[0]
        images[scale] = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(images[1.0].astype(int) - mine.astype(int)).max() <= 1
    assert np.abs(images[1.0].astype(float) - images[0.0]).mean() > 1.0


def test_training_changes_the_adapter_and_nothing_else(trained, tmp_path):
    settings, _ = trained
    cfg = settings.personalizer.model_copy(update={"steps": 3, "checkpoint_every": 0, "learning_rate": 1e-2})
    parts = load_sdxl_parts(*sdxl_folders(settings))
    model = Personalizer(parts)
    adapter = {id(p) for p in model.adapter.parameters()}
    frozen = {f"{m}.{n}": p.detach().clone() for m, module in parts.frozen_modules().items()
              for n, p in module.named_parameters() if id(p) not in adapter}
    start = {n: p.detach().clone() for n, p in model.adapter.named_parameters()}
    data = PersonalizerPairs(settings.open_lake(), "two_stage", "train", (96, 64), model.tokenizers,
                             reference_processor(parts.image_encoder.config))
    train_personalizer(model, data, cfg, tmp_path / "run")
    after = {f"{m}.{n}": p for m, module in parts.frozen_modules().items() for n, p in module.named_parameters()
             if id(p) not in adapter}
    assert after.keys() == frozen.keys() and len(frozen) > 100
    assert all(torch.equal(frozen[n], after[n]) for n in frozen)
    assert all(not p.requires_grad for p in after.values())
    changed = [n for n, p in model.adapter.named_parameters() if not torch.equal(start[n], p)]
    assert len(changed) == len(start)


def test_resume_three_then_four_equals_four_straight(trained, tmp_path):
    settings, _ = trained
    base = {"steps": 4, "checkpoint_every": 2, "text_dropout": 0.3, "image_dropout": 0.3, "both_dropout": 0.2}
    straight = _settings_with(settings, checkpoint_dir=tmp_path / "straight", **base)
    split = _settings_with(settings, checkpoint_dir=tmp_path / "split", **base)
    whole = run_train_personalizer(straight)
    first = run_train_personalizer(split, stop_at=3)
    assert first.step == 3 and first.adapter_dir is None
    second = run_train_personalizer(split)
    assert second.resumed_from == 3 and second.step == 4
    assert first.losses + second.losses == whole.losses
    a = load_file(str(personalizer_dir(straight) / WEIGHTS_NAME))
    b = load_file(str(personalizer_dir(split) / WEIGHTS_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_modes_build_different_pairs_from_the_same_rows(trained):
    settings, _ = trained
    lake = settings.open_lake()
    two_stage = {p["target_id"]: p for p in build_pairs(lake, "two_stage")[0]}
    unpaired = {p["target_id"]: p for p in build_pairs(lake, "unpaired")[0]}
    assert two_stage.keys() == unpaired.keys() and len(two_stage) == 6
    standardized = {r["image_id"]: r["image"] for r in lake.read("standardized").to_pylist()}
    real = {r["image_id"]: r for r in lake.read("real_images").to_pylist()}
    for image_id, pair in two_stage.items():
        other = unpaired[image_id]
        assert pair["reference_source"] == "standardized" and pair["reference_image"] == standardized[image_id]
        assert other["reference_source"] == "real_images" and other["reference_image"] == real[image_id]["image"]
        assert pair["target_image"] == other["target_image"] == real[image_id]["image"]
        assert pair["pair_id"] != other["pair_id"] and pair["standardizer_version"] == STANDARDIZER_VERSION
        expected = real[image_id]["caption"] or CAPTION_TEMPLATES[real[image_id]["domain"]]
        assert pair["caption"] == other["caption"] == expected and pair["split"] == real[image_id]["split"]

    with pytest.raises(FileNotFoundError, match="generate"):
        build_pairs(lake, "paired_one_stage")
    first = next(iter(real))
    rows = generate_images(settings, [decode_image(real[first]["image"])], [("a girl running", "action")], [0],
                           standardize=False)
    assert rows[0]["reference_ids"] == [first]  # the two-stage model's generation of that real image
    paired, problems = build_pairs(lake, "paired_one_stage")
    assert problems == []
    assert len(paired) == 1
    assert paired[0]["reference_source"] == "real_images" and paired[0]["reference_image"] == real[first]["image"]
    assert paired[0]["target_source"] == "generations" and paired[0]["target_image"] == rows[0]["image"]
    assert paired[0]["caption"] == "a girl running"


def test_generate_writes_one_row_per_prompt_sharing_one_reference(trained):
    settings, _ = trained
    lake = settings.open_lake()
    before = lake.count("generations")
    references = [decode_image(r, "RGB") for r in lake.read("real_images").column("image").to_pylist()[:2]]
    prompts = [("a character running", "action"), ("a character in the city", "background"),
               ("a character, back view", "viewpoint")]
    settings = _settings_with(settings, inference_steps=4)
    rows = generate_images(settings, references, prompts, [3], standardize=False, character_id="c0")
    assert len(rows) == 3 and lake.count("generations") == before + 3
    assert len({tuple(r["reference_ids"]) for r in rows}) == 1 and len(rows[0]["reference_ids"]) == 2
    assert [r["prompt_category"] for r in rows] == ["action", "background", "viewpoint"]
    assert all(r["method"] == "two_stage" and r["sampler"] == "ddim" and r["scale"] == 1.0 for r in rows)
    assert rows[0]["personalizer_version"] == content_version(personalizer_dir(settings) / WEIGHTS_NAME)
    images = [decode_image(r["image"]) for r in rows]
    assert images[0].shape == (96, 64, 3) and not np.array_equal(images[0], images[1])
    again = generate_images(settings, references, prompts, [3], standardize=False, character_id="c0")
    assert [r["generation_id"] for r in again] == [r["generation_id"] for r in rows]
    assert lake.count("generations") == before + 3  # a rerun replaces, never duplicates


def test_loading_the_models_draws_no_progress_bars(trained, capfd):
    """What `serialgen generate` prints stays the pipeline's own: no "Loading weights: 0%|..." from transformers."""
    settings, _ = trained
    capfd.readouterr()
    load_sdxl_parts(*sdxl_folders(settings))
    assert "Loading weights" not in capfd.readouterr().err


def test_bad_generation_input_is_one_error_and_writes_nothing(trained, tmp_path):
    settings, _ = trained
    lake = settings.open_lake()
    counts = (lake.count("generations"), lake.count("runs"))
    reference = np.full((96, 64, 3), 200, np.uint8)
    prompts = [("a character", "other")]
    with pytest.raises(GenerateInputError, match="out of range"):
        generate_images(settings, [reference], prompts, [0], scale=2.5, standardize=False)
    with pytest.raises(GenerateInputError, match="prompt 2 is empty"):
        generate_images(settings, [reference], [*prompts, ("  ", "other")], [0], standardize=False)
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_NAME} in .*unpaired"):
        generate_images(settings, [reference], prompts, [0], standardize=False, method="unpaired")
    broken = _settings_with(settings, image_encoder_dir=tmp_path / "encoder", model_dir=sdxl_folders(settings)[0])
    (tmp_path / "encoder").mkdir()
    with pytest.raises(FileNotFoundError, match="encoder/config.json: expected the config of the reference image encoder"):
        generate_images(broken, [reference], prompts, [0], standardize=False)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(GenerateInputError, match="bad.png"):
        read_reference(tmp_path / "bad.png")
    (tmp_path / "prompts.txt").write_text("# only a comment\n\n")
    with pytest.raises(GenerateInputError, match="no prompts"):
        read_prompts(tmp_path / "prompts.txt")
    assert (lake.count("generations"), lake.count("runs")) == counts


def test_plain_projection_token_count_is_configurable(trained):
    settings, _ = trained
    parts = load_sdxl_parts(*sdxl_folders(settings))
    adapter = install_ip_adapter(parts.unet, parts.image_encoder.config, tokens=4)
    state = adapter.export_state_dict()
    assert state["image_proj.proj.weight"].shape[0] == 4 * parts.unet.config.cross_attention_dim
    assert not adapter.full and "image_proj.norm.weight" in state


def test_reference_is_padded_to_a_white_square_not_cropped():
    tall = np.zeros((30, 10, 3), np.uint8)
    padded = pad_to_white_square(tall)
    assert padded.shape == (30, 30, 3) and (padded[:, 10:20] == 0).all()
    assert (padded[:, :10] == 255).all() and (padded[:, 20:] == 255).all()


def test_accelerate_entry_point_trains_unpaired_and_records(trained, tmp_path, capsys, tiny_sdxl):
    import json

    from serialgen.stages.train_personalizer import main

    settings, _ = trained
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"personalizer": {"checkpoint_dir": str(tmp_path / "runs"), "eval_pairs": 2,
                                                   **base_folders(tiny_sdxl)}}))
    main(["--lake", settings.lake, "--config", str(config), "--mode", "unpaired", "--steps", "2"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 2 and printed["adapter"] == str(tmp_path / "runs" / "unpaired")
    assert (tmp_path / "runs" / "unpaired" / WEIGHTS_NAME).is_file()
    run = settings.open_lake().read("runs", filter=f"run_id = '{printed['run_id']}'").to_pylist()[0]
    assert run["status"] == "completed" and json.loads(run["inputs"]).keys() == {"real_images"}
    pairs = settings.open_lake().read("personalizer_pairs", filter="mode = 'unpaired'").to_pylist()
    assert len(pairs) == 6 and all(p["reference_image"] == p["target_image"] for p in pairs)


def test_ema_adapter_is_what_training_leaves_for_export(trained, tmp_path):
    """With EMA on, the finished adapter holds the EMA weights, which lag behind the raw ones."""
    settings, _ = trained
    lake = settings.open_lake()
    finals = {}
    for ema in (None, 0.99):
        cfg = settings.personalizer.model_copy(update={"steps": 3, "checkpoint_every": 0, "learning_rate": 1e-2,
                                                       "ema_decay": ema})
        parts = load_sdxl_parts(*sdxl_folders(settings))
        model = Personalizer(parts)
        start = {k: v.clone() for k, v in model.adapter.export_state_dict().items()}
        data = PersonalizerPairs(lake, "two_stage", "train", (96, 64), model.tokenizers,
                                 reference_processor(parts.image_encoder.config))
        assert train_personalizer(model, data, cfg, tmp_path / str(ema)).finished
        finals[ema] = model.adapter.export_state_dict()
    moved = lambda state: sum((state[k] - start[k]).abs().sum().item() for k in start)  # noqa: E731
    assert 0 < moved(finals[0.99]) < moved(finals[None])


def test_unreadable_or_orphan_rows_become_error_rows_and_training_goes_on(tmp_path, tiny_sdxl):
    settings = with_overrides(load_settings(lake=str(tmp_path / "lake"), personalizer=base_folders(tiny_sdxl)),
                              "two_stage", 2)
    settings = _settings_with(settings, checkpoint_every=0, eval_pairs=1)
    lake = settings.open_lake()
    ids = make_real_and_standardized(lake, train=3, test=1)
    broken = lake.read("real_images", filter=f"image_id = '{ids[0]}'").to_pylist()[0]
    lake.upsert("real_images", [{**broken, "image": broken["image"][:40]}], "test")  # truncated PNG
    orphan = lake.read("standardized", filter=f"image_id = '{ids[1]}'").to_pylist()[0]
    lake.upsert("standardized", [{**orphan, "image_id": "no-such-real-image"}], "test")
    report = run_train_personalizer(settings)
    assert report.step == 2 and report.train_pairs == 2 and report.test_pairs == 1
    errors = {r["key"]: r["reason"] for r in lake.read("errors", filter="stage = 'train-personalizer'").to_pylist()}
    assert set(errors) == {f"two_stage/real_images/{ids[0]}", "two_stage/standardized/no-such-real-image"}
    assert "not readable" in errors[f"two_stage/real_images/{ids[0]}"]
    assert "without a `real_images` row" in errors["two_stage/standardized/no-such-real-image"]


@pytest.mark.slow
def test_generate_standardizes_first_and_prompts_share_one_standardized_reference(tmp_path, tiny_sdxl,
                                                                                 tiny_preprocessors):
    """Standardize, then generate: the reference is standardized once; every prompt's row carries that standardized image."""
    from serialgen.inference.standardize import standardize_images

    model = standardize_data.save_tiny_standardizer(tmp_path / "standardizer")
    settings = load_settings(lake=str(tmp_path / "lake"), standardizer={"inference_steps": 2},
                             standardize={"model_dir": str(model), "batch_size": 2},
                             personalizer={"steps": 2, "eval_pairs": 1, "inference_steps": 3,
                                           **base_folders(tiny_sdxl)})
    standardize_data.install_preprocessors(tiny_preprocessors, settings)
    make_real_and_standardized(settings.open_lake(), train=2, test=1)
    run_train_personalizer(settings)
    reference, _, _ = standardize_data.figure_scene(np.random.default_rng(3), 96, 144)
    prompts = [("running", "action"), ("in the city", "background"), ("smiling", "expression")]
    rows = generate_images(settings, [reference], prompts, [0])
    expected = standardize_images(settings, [reference], seed=0)[0]
    assert len(rows) == 3 and len({r["standardized_reference"] for r in rows}) == 1
    assert np.array_equal(decode_image(rows[0]["standardized_reference"], "RGB"), expected.image)
    assert {r["standardizer_version"] for r in rows} == {expected.model_version}
    lake = settings.open_lake()
    assert lake.count("generations") == 3

    # paired_one_stage: the two-stage model renders each real image; those renders are the targets
    rng = np.random.default_rng(7)
    scenes = [standardize_data.figure_scene(rng, 96, 144)[0] for _ in range(3)]
    lake.upsert("real_images", [{
        "image_id": pixel_id(scene), "source_uri": f"test://scene{i}", "image": encode_png(scene),
        "has_alpha": False, "caption": None, "domain": "real", "character_id": f"scene{i}",
        "split": "test" if i == 2 else "train", "source_mode": "RGB", "width": 96, "height": 144}
        for i, scene in enumerate(scenes)], "test")
    report = run_train_personalizer(with_overrides(settings, "paired_one_stage"))
    assert report.step == 2
    pairs = lake.read("personalizer_pairs", filter="mode = 'paired_one_stage'").to_pylist()
    by_reference = {p["reference_id"]: p for p in pairs}
    generations = {g["generation_id"]: g for g in lake.read("generations").to_pylist()}
    for scene in scenes:
        pair = by_reference[pixel_id(scene)]
        made = generations[pair["target_id"]]
        assert pair["reference_source"] == "real_images" and pair["target_source"] == "generations"
        assert made["method"] == "two_stage" and made["standardized_reference"] is not None
        assert pair["caption"] == made["prompt"] and pair["reference_image"] == encode_png(scene)
    failed = lake.read("errors", filter="stage = 'train-personalizer'").to_pylist()
    assert all("two-stage generation failed" in e["reason"] for e in failed)
    assert len(pairs) + len(failed) == lake.count("real_images")
