"""Stage driver: train the personalizer's base text-to-image model from scratch (offline profiles; no Prefect).

Reads the train split's renders, pairs and standards, captioned from their metadata; writes
``<base_model_dir>/model/base`` (SDXL layout, pixel-space "VAE"), ``model/image_encoder`` (built from
config, frozen: the adapter's reference encoder, never one of the probes), with ``base_model.image_path``
``model/ip_adapter`` (the adapter trained with the UNet, stock layout), a sample sheet, and a `runs` row
whose metrics say whether it learned: the held-out (test-split characters) x0 loss with the true caption,
with no caption, and of the strongest trivial predictor (the mean training image), on the same noise and
timesteps; with an image path also given another image of the same character, or of another held-out
character, as reference: whether the reference tells who is drawn on characters never trained on.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from serialgen.checkpoints import base_adapter_dir, base_model_dir, content_version
from serialgen.compositing.split import split_of
from serialgen.config import ConfigError, Settings
from serialgen.dag import config_hash
from serialgen.imaging import grid
from serialgen.models.ip_adapter import remove_ip_adapter, save_adapter
from serialgen.models.sdxl import pixel_configs, random_sdxl_parts, save_sdxl_folders
from serialgen.runtime import torch_threads
from serialgen.storage.runs import MODEL_VERSION, StageRun, require_input
from serialgen.synthetic.labelled import labelled_images
from serialgen.training.base_model import BaseModel, train_base_model
from serialgen.training.captioned import CaptionedImage, CaptionedImages, captioned, with_references
from serialgen.training.data import seed_of
from serialgen.training.loop import prepare_run_folder, training_recipe
from serialgen.training.personalizer import prediction_target
from serialgen.training.synthetic_pairs import same_character_references

STAGE = "train-base"
INPUTS = ["renders", "pairs", "standards", "poses", "motions", "backgrounds"]
#: Captions of the sample sheet (rows), each drawn with four seeds.
SAMPLE_CAPTIONS = ("a character, full body, front view, standing, on a plain white background",
                   "a character, bust shot, side view, walking, outdoors",
                   "a character, head shot, front view, waving, in a room",
                   "a character, full body, back view, running, in front of a patterned wall",
                   # appearance named (part of the training captions do): the path an adapter has to steer
                   "a character with blond long hair, red dress, full body, front view, standing, on a plain white background",
                   "a character with black short hair, blue tee, yellow trousers, full body, front view, standing, "
                   "on a plain white background")
HELD_OUT_ITEMS = 256


@dataclass
class TrainBaseReport:
    run_id: str
    folder: Path
    step: int
    train_images: int
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


def run_train_base(settings: Settings, resume: bool = True, stop_at: int | None = None,
                   flow_run_id: str | None = None) -> TrainBaseReport:
    """Read and caption the train split, train (or continue) the UNet, score it on held-out characters, export."""
    lake = settings.open_lake()
    for table, producer in (("renders", "render"), ("pairs", "composite"), ("standards", "render")):
        require_input(lake, table, STAGE, producer)
    cfg, size = settings.base_model, (settings.personalizer.height, settings.personalizer.width)
    folder = base_model_dir(settings)
    start = time.perf_counter()
    with StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=INPUTS, flow_run_id=flow_run_id) as run:
        with torch_threads(1):
            images = captioned(labelled_images(lake), size, cfg.appearance_share)
        fraction = settings.composite.test_fraction
        train = [i for i in images if split_of(i.character_id, fraction) == "train"]
        held_out = [i for i in images if split_of(i.character_id, fraction) != "train"]
        if not train:
            raise ConfigError(f"{STAGE}: no train-split images in lake {lake.uri}: add characters")
        parts = random_sdxl_parts(folder / "vocab", pixel_configs(cfg.channels, cfg.layers_per_block, cfg.patch_size),
                                  cfg.seed)
        parts.scheduler_config.update(prediction_type=cfg.prediction_type, beta_schedule=cfg.beta_schedule,
                                      timestep_spacing="trailing")
        tokenizers = (parts.tokenizer, parts.tokenizer_2)
        image_tokens = settings.personalizer.image_tokens if cfg.image_path else None
        model_fields = {"profile": settings.profile, "size": list(size), "image_tokens": image_tokens,
                        **cfg.model_dump(mode="json", include={"channels", "layers_per_block", "patch_size",
                                                               "prediction_type", "beta_schedule", "seed"})}
        prepare_run_folder(folder, model_fields, dict(run.inputs), resume, training_recipe(cfg))
        model = BaseModel(parts, image_tokens, cfg.seed)
        encode = model.embed_references if model.adapter is not None else None
        train_data = (with_references(train, range(len(train)), same_character_references(train), tokenizers, encode)
                      if encode else CaptionedImages(train, tokenizers))
        result = train_base_model(model, train_data, cfg, folder, resume, stop_at)
        metrics: dict[str, Any] = {"step": result.step, "resumed_from": result.resumed_from,
                                   "train_images": len(train), "held_out_images": len(held_out),
                                   "captions": len({i.caption for i in train}),
                                   "final_loss": result.losses[-1] if result.losses else None}
        if result.step >= cfg.steps:
            model.eval()
            scored = held_out[:HELD_OUT_ITEMS]
            metrics["held_out"] = held_out_losses(model, _held_out_variants(scored, tokenizers, encode),
                                                  train_data.pixels, cfg.seed) if held_out else None
            export = folder / "model"
            adapter = None
            shutil.rmtree(base_adapter_dir(settings), ignore_errors=True)   # never a path another base trained
            if model.adapter is not None:
                adapter = save_adapter(model.adapter, base_adapter_dir(settings),
                                       {"trained_with": "train-base", "steps": result.step, "image_tokens": image_tokens})
                remove_ip_adapter(model.unet)   # the base folder stays a text-only SDXL
            save_sdxl_folders(parts, export / "base", export / "image_encoder", folder / "vocab")
            sample_sheet(export / "base", export / "image_encoder", settings, adapter).save(folder / "samples.png")
            metrics[MODEL_VERSION] = content_version(export)
            (export / "training.json").write_text(json.dumps(metrics, indent=1, default=str))
            run.checkpoint = str(export)
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        run.metrics = metrics
    return TrainBaseReport(run.run_id, folder, result.step, len(train), metrics)


def _held_out_variants(images: list[CaptionedImage], tokenizers, encode) -> dict[str, CaptionedImages]:
    """The held-out images, named by what conditions them: the plain caption (no reference), the caption naming
    the appearance, and with an image path the plain caption with another image of the same character, or an
    image of another held-out character, as reference."""
    variants = {"caption": CaptionedImages(images, tokenizers),
                "caption_and_appearance": CaptionedImages([i.described() for i in images], tokenizers)}
    if encode is not None:
        own = same_character_references(images)
        characters = sorted({i.character_id for i in images})
        first = {c: next(k for k, i in enumerate(images) if i.character_id == c) for c in characters}
        other = [first[characters[(characters.index(i.character_id) + 1) % len(characters)]] for i in images]
        variants["caption_and_reference"] = with_references(images, range(len(images)), own, tokenizers, encode)
        variants["caption_and_other_character"] = with_references(images, range(len(images)), other, tokenizers,
                                                                  encode)
    return variants


@torch.no_grad()
def held_out_losses(model: BaseModel, variants: dict[str, CaptionedImages], train_pixels: torch.Tensor, seed: int,
                    repeats: int = 4, batch_size: int = 32) -> dict[str, float]:
    """Mean MSE (in the model's prediction space) on held-out images over fixed (noise, timestep) draws:
    the model with each of ``variants`` (named conditionings of the same images: captions, and references
    where a variant has them; without, a base with an image path gets the unconditional image), with no
    caption, and the mean training image as the x0 prediction (the best constant; only comparable when the
    model predicts x0)."""
    scheduler = model.training_scheduler()
    mean_image = train_pixels.float().mean(0) / 127.5 - 1
    sums = {**dict.fromkeys(variants, 0.0), "no_caption": 0.0, "mean_image": 0.0}
    data = next(iter(variants.values()))
    count = 0
    for repeat in range(repeats):
        for first in range(0, len(data), batch_size):
            last = min(first + batch_size, len(data))
            pixels = data.pixels[first:last].float() / 127.5 - 1
            generator = torch.Generator().manual_seed(seed_of(seed, repeat, first))
            latents = model.encode_latents(pixels, generator)
            noise = torch.randn(latents.shape, generator=generator)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (last - first,), generator=generator)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            target = prediction_target(scheduler, latents, noise, timesteps)
            for name, variant in (*variants.items(), ("no_caption", None)):
                source = variant or data
                prompt, pooled = model.encode_prompt(source.input_ids[first:last], source.input_ids_2[first:last])
                keep = 1.0 if variant is not None else 0.0
                embeds = None
                if model.adapter is not None:
                    batch = {"pixel_values": pixels}
                    if source.reference_of is not None:
                        batch["image_embeds"] = source.reference_embeds[source.reference_of[first:last]]
                    embeds = model.reference_embeds(batch, None)
                prediction = model(noisy, timesteps, prompt * keep, pooled * keep, data.time_ids[first:last], embeds)
                sums[name] += torch.nn.functional.mse_loss(prediction, target, reduction="sum").item() / target[0].numel()
            constant = model.encode_latents(mean_image[None].expand_as(pixels), generator)
            sums["mean_image"] += torch.nn.functional.mse_loss(constant, target, reduction="sum").item() / target[0].numel()
            count += last - first
    out = {name: value / count for name, value in sums.items()}
    if scheduler.config.prediction_type != "sample":
        out.pop("mean_image")
    return out


def sample_sheet(base: Path, image_encoder: Path, settings: Settings, adapter: Path | None = None,
                 seeds: int = 4) -> Image.Image:
    """:data:`SAMPLE_CAPTIONS` (rows) x ``seeds`` (columns; column k's noise is seed k in every row) drawn by the
    exported model, as one batch: through the stock SDXL pipeline, or, for a base trained with an image path
    (``adapter``), with that adapter given no reference (the unconditional image), as it learned text alone."""
    from serialgen.models.sdxl import load_sdxl_parts

    parts = load_sdxl_parts(base, image_encoder)
    cfg = settings.personalizer
    prompts = [c for c in SAMPLE_CAPTIONS for _ in range(seeds)]
    columns = [k for _ in SAMPLE_CAPTIONS for k in range(seeds)]
    if adapter is not None:
        from serialgen.pipelines.personalization import PersonalizationPipeline

        pipeline = PersonalizationPipeline(parts, adapter)
        nothing = pipeline.unconditional()
        images = pipeline.generate_batch(prompts, torch.cat([nothing, nothing]), columns, 1.0, cfg.height, cfg.width,
                                         cfg.inference_steps, cfg.guidance_scale)
    else:
        from diffusers import DDIMScheduler, StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
            tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=parts.unet,
            scheduler=DDIMScheduler(**parts.scheduler_config, clip_sample=False, set_alpha_to_one=False))
        pipe.set_progress_bar_config(disable=True)
        drawn = pipe(prompt=prompts, height=cfg.height, width=cfg.width, num_inference_steps=cfg.inference_steps,
                     guidance_scale=cfg.guidance_scale, output_type="np",
                     generator=[torch.Generator().manual_seed(k) for k in columns]).images
        images = [(np.clip(image, 0, 1) * 255).round().astype(np.uint8) for image in drawn]
    sheet = grid([images[row * seeds:(row + 1) * seeds] for row in range(len(SAMPLE_CAPTIONS))])
    return Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST)
