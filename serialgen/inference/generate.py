"""Serial generation: standardize a reference (two-stage modes), then personalize it with a trained adapter
into one image per (prompt, seed), upserted into `generations` with a `runs` row of stage ``generate``.

The `generate` command and deployment call it, and so does train-personalizer (paired_one_stage targets).
Every input is checked before anything is computed or written (references, prompts, seeds, scale, the
adapter, the SDXL and encoder files); all images are generated before the one upsert into `generations`, so
a failure never leaves part of a request written. :class:`Generator` is the loaded models alone (SDXL with
one adapter, the standardizer): evaluate loads one per mode and runs the whole test set through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serialgen.checkpoints import content_version, personalizer_dir, sdxl_folders
from serialgen.config import ConfigError, Settings
from serialgen.dag import config_hash
from serialgen.imaging import grid
from serialgen.inference.standardize import ImageStandardizer, standardize_images
from serialgen.models.ip_adapter import WEIGHTS_NAME
from serialgen.models.sdxl import load_sdxl_parts
from serialgen.real_images import pixel_id
from serialgen.storage.images import ImageDecodeError, decode_image, encode_png, on_white
from serialgen.storage.runs import StageRun
from serialgen.training.personalizer_data import MODES

STAGE = "generate"
SCALE_RANGE = (0.0, 2.0)


class GenerateInputError(ConfigError):
    """A generation request the user can fix: unreadable reference, no prompts, scale out of range, ..."""


@dataclass
class Generated:
    """What one request produced (its `generations` rows, and the references and standardized references)."""

    rows: list[dict]
    references: list[np.ndarray]
    standardized: list[np.ndarray] | None


def read_reference(path: str | Path) -> np.ndarray:
    """A reference image file -> uint8 HxWx3 (transparency onto white), or one clear error naming it."""
    try:
        return _rgb(decode_image(Path(path).read_bytes()))
    except (OSError, ImageDecodeError) as exc:
        raise GenerateInputError(f"cannot read reference image {path}: {exc}") from None


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """A prompt file: one prompt per line, optionally ``category<TAB>prompt``; ``#`` lines are comments."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GenerateInputError(f"cannot read prompt file {path}: {exc}") from None
    prompts = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        category, _, text = line.rpartition("\t")
        prompts.append((text.strip(), category.strip() or "other"))
    if not prompts:
        raise GenerateInputError(f"prompt file {path} holds no prompts (one per line, optionally category<TAB>prompt)")
    return prompts


def generate_images(settings: Settings, references: Sequence[np.ndarray], prompts: Sequence[tuple[str, str]],
                    seeds: Sequence[int], scale: float | None = None, standardize: bool = True,
                    adapter_dir: Path | None = None, character_id: str | None = None, method: str | None = None,
                    flow_run_id: str | None = None) -> list[dict]:
    """The `generations` rows upserted, one per (prompt, seed), all sharing one reference."""
    return generate_with_references(settings, references, prompts, seeds, scale, standardize, adapter_dir,
                                    character_id, method, flow_run_id).rows


def generate_with_references(settings: Settings, references: Sequence[np.ndarray],
                             prompts: Sequence[tuple[str, str]], seeds: Sequence[int], scale: float | None = None,
                             standardize: bool = True, adapter_dir: Path | None = None,
                             character_id: str | None = None, method: str | None = None,
                             flow_run_id: str | None = None) -> Generated:
    """:func:`generate_images`, also returning the references and standardized references (for grids): one
    request, its models loaded for it (:class:`Generator`), its rows upserted under a `runs` row of its own."""
    method = method or settings.personalizer.mode
    _check_request([_rgb(np.asarray(r)) for r in references], prompts, seeds, _scale(settings, scale), method)
    generator = Generator(settings, method, adapter_dir, standardize)
    generated = generator.generate(references, prompts, seeds, scale, character_id)
    write_generations(settings, generated, flow_run_id)
    return generated


def write_generations(settings: Settings, generated: Generated, flow_run_id: str | None = None) -> None:
    """Upsert one request's rows into `generations` under a `runs` row of stage ``generate``."""
    lake = settings.open_lake()
    first = generated.rows[0]
    with StageRun(lake, STAGE, config_hash(settings, STAGE), flow_run_id=flow_run_id) as run:
        lake.upsert("generations", generated.rows, run.run_id)
        run.outputs = ["generations"]
        run.metrics = {"images": len(generated.rows), "method": first["method"],
                       "references": len(generated.references), "personalizer_version": first["personalizer_version"],
                       "standardizer_version": first["standardizer_version"]}


def adapter_file(settings: Settings, method: str, adapter_dir: Path | None = None) -> Path:
    """The exported adapter of ``method`` (in ``adapter_dir``, default its training folder), or one clear error."""
    folder = Path(adapter_dir) if adapter_dir is not None else personalizer_dir(settings, method)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"missing {WEIGHTS_NAME} in {folder}: expected the trained personalizer adapter "
                                f"({method}) there; run `serialgen train-personalizer --mode {method}`")
    return path


class Generator:
    """SDXL with one mode's trained adapter, and for ``standardize`` an image standardizer, loaded once: each
    call generates one character's images (one per (prompt, seed)) and writes nothing.

    ``standardize``: False, references go in as they are; True, a standardizer is loaded for this generator;
    an :class:`~serialgen.inference.standardize.ImageStandardizer`, that one is used (shared, e.g. by the modes
    evaluate runs)."""

    def __init__(self, settings: Settings, method: str | None = None, adapter_dir: Path | None = None,
                 standardize: bool | ImageStandardizer = False) -> None:
        from serialgen.pipelines.personalization import PersonalizationPipeline

        self.settings = settings
        self.method = method or settings.personalizer.mode
        _check_mode(self.method)
        adapter = adapter_file(settings, self.method, adapter_dir)
        parts = load_sdxl_parts(*sdxl_folders(settings))
        self.standardizer: ImageStandardizer | None = (ImageStandardizer(settings) if standardize is True
                                                       else None if standardize is False else standardize)
        self.pipeline = PersonalizationPipeline(parts, adapter)
        self.personalizer_version = content_version(adapter)

    def __call__(self, references: Sequence[np.ndarray], prompts: Sequence[tuple[str, str]], seeds: Sequence[int],
                 scale: float | None = None, character_id: str | None = None) -> list[dict]:
        """The `generations` rows of one character (not written)."""
        return self.generate(references, prompts, seeds, scale, character_id).rows

    def generate(self, references: Sequence[np.ndarray], prompts: Sequence[tuple[str, str]], seeds: Sequence[int],
                 scale: float | None = None, character_id: str | None = None) -> Generated:
        """:meth:`__call__`, also returning the references and standardized references."""
        from serialgen.pipelines.personalization import SAMPLER

        cfg, method = self.settings.personalizer, self.method
        scale = _scale(self.settings, scale)
        reference_ids = [pixel_id(np.asarray(r)) for r in references]
        references = [_rgb(np.asarray(r)) for r in references]
        _check_request(references, prompts, seeds, scale, method)
        standardizer_version, shown = None, None
        if self.standardizer is not None:
            standardized = standardize_images(self.settings, references, seed=0, standardizer=self.standardizer)
            shown = [s.image for s in standardized]
            standardizer_version = standardized[0].model_version
        embeds = self.pipeline.embed(shown if shown is not None else references)
        personalizer_version = self.personalizer_version
        standardized_png = encode_png(grid([shown])) if shown is not None else None
        rows = []
        for prompt, category in prompts:
            for seed in seeds:
                image = self.pipeline.generate(prompt, embeds, int(seed), scale, cfg.height, cfg.width,
                                               cfg.inference_steps, cfg.guidance_scale)
                key = json.dumps([method, reference_ids, prompt, int(seed), scale, standardizer_version,
                                  personalizer_version, cfg.inference_steps, cfg.guidance_scale, cfg.height, cfg.width])
                rows.append({
                    "generation_id": hashlib.sha256(key.encode()).hexdigest()[:32], "method": method,
                    "character_id": character_id, "reference_ids": reference_ids,
                    "standardized_reference": standardized_png, "prompt": prompt, "prompt_category": category,
                    "seed": int(seed), "scale": scale, "sampler": SAMPLER, "steps": cfg.inference_steps,
                    "standardizer_version": standardizer_version, "personalizer_version": personalizer_version,
                    "image": encode_png(image), "width": cfg.width, "height": cfg.height})
        return Generated(rows, references, shown)


def _scale(settings: Settings, scale: float | None) -> float:
    return settings.personalizer.scale if scale is None else float(scale)


def _check_request(references: list[np.ndarray], prompts: Sequence[tuple[str, str]], seeds: Sequence[int],
                   scale: float, method: str) -> None:
    if not references:
        raise GenerateInputError("no reference image: pass at least one --reference")
    if not prompts:
        raise GenerateInputError("no prompt: pass --prompt TEXT or --prompts FILE")
    empty = [i for i, (text, _) in enumerate(prompts) if not text or not text.strip()]
    if empty:
        raise GenerateInputError(f"prompt {empty[0] + 1} is empty")
    if not seeds:
        raise GenerateInputError("no seed: --seeds must be at least 1")
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1] or not np.isfinite(scale):
        raise GenerateInputError(f"adapter scale {scale} is out of range [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}]")
    _check_mode(method)


def _check_mode(method: str) -> None:
    if method not in MODES:
        raise GenerateInputError(f"unknown personalizer mode {method!r}; choose one of: {', '.join(MODES)}")


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise GenerateInputError(f"a reference must be a uint8 HxW, HxWx3 or HxWx4 image, got {image.dtype} "
                                 f"{image.shape}")
    return on_white(image)

