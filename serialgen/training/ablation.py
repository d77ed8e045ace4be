"""The paper's Table 3 at small scale: FBDM on/off x RPIM on/off, against trivial baselines.

Every variant trains with the same budget (steps, batch, schedule, seed) on the train split and
is scored on held-out characters (the test split: the split is by character hash) with PSNR and
SSIM (data range 1) of its DDIM output against the rendered standard view. The same images are
scored for three baselines a model must beat to have learned anything: the input itself resized,
the mean standard image of the training set, and the training standard image nearest to the
input by pixel distance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serialgen.compositing.split import TRAIN, VALIDATION, held_out_role, split_of
from serialgen.config import StandardizerSettings
from serialgen.models.standardizer import Standardizer
from serialgen.pipelines.standardization import StandardizationPipeline
from serialgen.storage import Lake
from serialgen.storage.images import decode_image
from serialgen.storage.torch_reader import resize_image
from serialgen.training.colour import band_colours, figure_bands
from serialgen.training.metrics import psnr, ssim
from serialgen.training.standardizer import train_standardizer

#: (name, FBDM, RPIM) in the paper's Table 3 order: the baseline model, each module, both.
VARIANTS: tuple[tuple[str, bool, bool], ...] = (
    ("no modules", False, False), ("FBDM", True, False), ("RPIM", False, True), ("FBDM+RPIM", True, True))


@dataclass
class Row:
    """One line of the table: a variant or a baseline, scored on ``n`` held-out pairs."""

    method: str
    psnr: float
    ssim: float
    n: int
    fbdm: bool | None = None                  # None for baselines
    rpim: bool | None = None
    train_seconds: float | None = None        # this invocation's training wall time (0 when already trained)
    steps: int | None = None
    final_loss: float | None = None
    model_dir: Path | None = None
    per_pair_psnr: list[float] = field(default_factory=list)
    per_pair_ssim: list[float] = field(default_factory=list)


@dataclass
class Ablation:
    rows: list[Row]
    pair_ids: list[str]
    grid: np.ndarray                          # uint8 HxWx3: input | each variant | target, one pair per row
    eval_seconds: float
    character_ids: list[str] = field(default_factory=list)
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (N, 3, H, W) in [-1, 1]
    targets: torch.Tensor | None = None       # (N, 3, H, W) in [-1, 1], the true standard views


def evaluation_pairs(data: Sequence[dict[str, Any]], limit: int) -> list[int]:
    """Up to ``limit`` held-out pairs spread over characters: each character's first pair, then its second, ..."""
    by_character: dict[str, list[int]] = {}
    for i, item in enumerate(data):
        by_character.setdefault(item["character_id"], []).append(i)
    order = [ids[k] for k in range(max(map(len, by_character.values()), default=0))
             for _, ids in sorted(by_character.items()) if k < len(ids)]
    return order[:limit]


def baseline_predictions(train: Sequence[dict[str, Any]], inputs: torch.Tensor,
                         background_masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """The baselines' "standardized" images for ``inputs`` (B, 3, H, W) in [-1, 1] with their background masks
    (B, 1, H, W, 1 = background): the input, the mean training standard, that template recoloured with the
    input figure's colours band by band, and the training standard nearest by pixels."""
    standards: dict[str, torch.Tensor] = {}
    for item in train:  # one standard image per training character
        standards.setdefault(item["character_id"], item["target_image"])
    bank = torch.stack(list(standards.values()))
    mean = bank.mean(0)
    nearest = torch.cdist(inputs.flatten(1), bank.flatten(1)).argmin(1)
    recoloured = torch.stack([recolour(mean, inputs[i], background_masks[i, 0] < 0.5) for i in range(len(inputs))])
    return {"input (resized)": inputs, "mean training standard": mean[None].expand_as(inputs),
            "recoloured mean standard": recoloured, "nearest training standard": bank[nearest]}


def recolour(template: torch.Tensor, reference: torch.Tensor, reference_foreground: torch.Tensor) -> torch.Tensor:
    """The template (3, H, W, [-1, 1], figure on white) with each band of its figure shifted to the mean colour
    of the same band of the reference's figure: a "tinted template" that knows the reference's colours."""
    colours, present = band_colours(reference, reference_foreground)
    out = template.clone()
    for band, colour, known in zip(figure_bands(template.mean(0) < 0.8), colours, present):
        if band.any() and known:
            out[:, band] += (colour - template[:, band].mean(1))[:, None]
    return out.clamp(-1, 1)


def mean_training_standard(lake: Lake, test_fraction: float, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: the mean standard view of the training-split characters, read from `standards`
    and resized as the pairs' targets are (the strongest trivial baseline of the ablation)."""
    total, count = torch.zeros(3, *size), 0
    for row in lake.read("standards", columns=["character_id", "image"]).to_pylist():
        if split_of(row["character_id"], test_fraction) == TRAIN:
            image = torch.from_numpy(decode_image(row["image"], "RGB")).permute(2, 0, 1).float() / 255
            total += resize_image(image, size) * 2 - 1
            count += 1
    return total / max(count, 1)


def score(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR and SSIM of [-1, 1] images, on the data range 1 after mapping to [0, 1]."""
    prediction, target = (prediction.clamp(-1, 1) + 1) / 2, (target + 1) / 2
    return psnr(prediction, target), ssim(prediction, target)


def standardize_all(model: Standardizer, batch: dict[str, torch.Tensor], cfg: StandardizerSettings,
                    chunk: int = 16) -> torch.Tensor:
    """DDIM standardizations (``cfg.inference_steps``, ``cfg.guidance_scale``, ``cfg.seed``) in chunks."""
    pipeline = StandardizationPipeline(model, "cuda" if torch.cuda.is_available() else "cpu")
    out = []
    for first in range(0, batch["input_image"].shape[0], chunk):
        part = {k: v[first:first + chunk] for k, v in batch.items()}
        out.append(pipeline.standardize(part["input_image"], part["background_mask"], part["reference_pose_image"],
                                        model.target_pose(1), cfg.inference_steps,
                                        cfg.guidance_scale, cfg.seed).cpu())
    return torch.cat(out)


def variant_folder(output_dir: Path, name: str) -> Path:
    """Where variant ``name`` trains (``FBDM+RPIM`` -> ``fbdm-rpim``)."""
    return Path(output_dir) / name.lower().replace("+", "-").replace(" ", "-")


def run_ablation(build: Callable[[bool, bool], Standardizer], train: Sequence[dict[str, Any]],
                 test: Sequence[dict[str, Any]], cfg: StandardizerSettings, output_dir: Path,
                 eval_pairs: int = 64, grid_pairs: int = 6,
                 variants: Sequence[tuple[str, bool, bool]] = VARIANTS,
                 log: Callable[[str], None] = print) -> Ablation:
    """Train (or resume, or reuse) each variant in ``output_dir/<name>`` and score all on the same pairs.

    ``build(fbdm, rpim)`` makes a fresh model; training is :func:`train_standardizer` with ``cfg``, and
    evaluation uses the exported model (EMA weights when ``cfg.ema_decay`` is set).
    """
    validation = [item for item in test if held_out_role(item["character_id"]) == VALIDATION]
    scored = [item for item in test if held_out_role(item["character_id"]) != VALIDATION]
    chosen = evaluation_pairs(scored, eval_pairs)
    if not chosen:
        raise ValueError("no held-out pairs to evaluate on")
    test = scored
    batch = torch.utils.data.default_collate([{k: test[i][k] for k in (
        "input_image", "background_mask", "reference_pose_image", "target_image")}
        for i in chosen])
    target = batch.pop("target_image")
    rows, outputs = [], {}
    eval_seconds = 0.0
    for name, fbdm, rpim in variants:
        folder = variant_folder(output_dir, name)
        started = time.perf_counter()
        result = train_standardizer(build(fbdm, rpim), train, cfg, folder, validation_data=validation or None,
                                    resume=True)
        trained = time.perf_counter() - started
        log(f"{name}: trained to step {result.step} in {trained:.0f} s")
        started = time.perf_counter()
        model = Standardizer.from_pretrained(result.model_dir)
        prediction = standardize_all(model, batch, cfg)
        eval_seconds += time.perf_counter() - started
        p, s = score(prediction, target)
        outputs[name] = prediction
        rows.append(Row(name, p.mean().item(), s.mean().item(), len(chosen), fbdm, rpim, trained, result.step,
                        result.losses[-1] if result.losses else None, result.model_dir, p.tolist(), s.tolist()))
        log(f"{name}: PSNR {rows[-1].psnr:.2f} dB, SSIM {rows[-1].ssim:.4f} on {len(chosen)} held-out pairs")
    for name, prediction in baseline_predictions(train, batch["input_image"], batch["background_mask"]).items():
        p, s = score(prediction, target)
        outputs[name] = prediction
        rows.append(Row(name, p.mean().item(), s.mean().item(), len(chosen), per_pair_psnr=p.tolist(),
                        per_pair_ssim=s.tolist()))
    shown = list(range(min(grid_pairs, len(chosen))))
    columns = [batch["input_image"], *(outputs[name] for name, _, _ in variants),
               outputs["recoloured mean standard"], target]
    grid = torch.cat([torch.cat([c[i] for c in columns], -1) for i in shown], -2)
    grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Ablation(rows, [test[i]["pair_id"] for i in chosen], grid, eval_seconds,
                    [test[i]["character_id"] for i in chosen], outputs, target)
