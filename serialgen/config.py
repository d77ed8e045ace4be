"""Settings: defaults < named profile < YAML file < environment (``SERIALGEN_*``) < CLI flags.

Profiles are data (:data:`PROFILES`): ``tiny`` (default, CPU, tiny models, procedural assets),
``small`` (a from-scratch standardizer that learns on CPU: the paper's Table 3 at small scale),
``sd15`` (the paper's standardizer) and ``sdxl`` (the paper's personalizer).
Each stage reads its own section; a stage's config hash keys its caching and lineage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from serialgen.storage import Lake, LakeError
from serialgen.storage.lake import Upkeep
from serialgen.synthetic.expressions import DEFAULT_EXPRESSION_KEYS, DEFAULT_EXPRESSION_PREFIXES


class ConfigError(Exception):
    """A configuration the user can fix: unknown profile, unreadable or invalid file or value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def output_settings(self) -> dict[str, Any]:
        """The values that can change a stage's outputs: every field not marked :func:`runtime`, and those
        marked :func:`added` only when set to something else than their default."""
        keep = set()
        for name, field in type(self).model_fields.items():
            marks = field.json_schema_extra or {}
            if not marks.get("runtime") and not (marks.get("added") and getattr(self, name) == field.default):
                keep.add(name)
        return self.model_dump(mode="json", include=keep)


def runtime(default: Any) -> Any:
    """A setting that changes how a stage runs (parallelism, commit size, logging), never what it writes:
    it is left out of the stage's config hash, so changing it reruns nothing."""
    return Field(default, json_schema_extra={"runtime": True})


def added(default: Any) -> Any:
    """A setting added after lakes were built, whose default does what the code did before it existed: left
    out of the stage's config hash (and a training run's recipe) while at its default, so adding it reruns
    and retrains nothing."""
    return Field(default, json_schema_extra={"added": True})


class UpkeepSettings(Section):
    """Lake upkeep (see serialgen/storage/lake.py): key indexes, compaction, old-version removal."""

    compact_every: int = 100            # commits of one process to a table between compactions; 0: never
    retain_hours: float = 24.0          # versions younger than this are kept (readers that pinned them)
    index_keys: bool = True
    index_min_rows: int = 10_000        # tables smaller than this are not indexed


class RaySettings(Section):
    address: str | None = None          # None: start a local Ray; "auto" or "ray://host:10001": a cluster
    num_cpus: int | None = runtime(None)  # local Ray only; None = all cores
    object_store_memory_mb: int = 1024  # local Ray only


class AssetsSettings(Section):
    characters: str | None = None       # folder or URI of character files (None: procedural only)
    motions: str | None = None          # folder or URI of motion files
    # 10: with the 20 % hash split, seeds 8 and 9 are held out, so the demo reports PSNR/SSIM on unseen characters.
    procedural_characters: int = 10
    procedural_motions: bool = True
    seed: int = 0
    pose_dedup_threshold: float = 0.08  # radians, max joint-rotation distance for two poses to be one
    frame_step: int = 2                 # sample every n-th frame of a clip
    workers: int = runtime(2)           # bpy worker processes
    min_canonical_bones: int = 15
    duplicate_threshold: float = 0.05   # geometry-signature distance below which a character is a duplicate
    motion_variants: int = 2            # seeded variations of each procedural motion kind
    batch_size: int = runtime(4)        # files per worker task
    thumbnail_width: int = 96
    thumbnail_height: int = 144
    thumbnail_samples: int = 4


class RenderSettings(Section):
    width: int = 128
    height: int = 192
    engine: Literal["CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"] = "CYCLES"
    device: Literal["CPU", "GPU"] = "CPU"
    samples: int = 8
    adaptive_threshold: float = 0.05
    denoise: bool = False               # OpenImageDenoise on the final frame (Cycles)
    # OIDN's network size and how its albedo/normal guides are cleaned first (Blender's defaults: HIGH, ACCURATE).
    denoise_quality: Literal["HIGH", "BALANCED", "FAST"] = "HIGH"
    denoise_prefilter: Literal["ACCURATE", "FAST", "NONE"] = "ACCURATE"
    max_bounces: int = 12               # Cycles light-path bounces in all (Blender's default)
    threads_per_worker: int = runtime(1)
    workers: int = runtime(2)
    gpus_per_worker: float = runtime(0.0)
    poses_per_character: int = 6
    views_per_pose: int = 2
    seed: int = 0
    limit: int | None = None
    chunk_size: int = runtime(8)        # items per actor call and per commit (resume granularity)
    standard_head_top: float = 0.06     # standard view: head top on this row (fraction of the height, from the top)
    standard_chin: float = 0.18         # standard view: chin on this row
    standard_arm_angle: float = 45.0    # standard A-pose: arms this many degrees below horizontal
    # Close-ups and cut-offs (the paper standardizes head-only and upper-body references): shares of renders.
    bust_share: float = 0.15
    head_share: float = 0.1
    cutoff_share: float = 0.15
    max_cutoff: float = 0.85            # a cut-off pushes up to this share of the figure out of frame
    # Expressions: allow-listed shape keys only (ARKit, VRM, MMD names), random partial weights.
    expression_share: float = 0.7       # renders with an expression (the standard view never has one)
    expression_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPRESSION_KEYS))
    expression_prefixes: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPRESSION_PREFIXES))

    @model_validator(mode="after")
    def _gpu_actors_render_on_their_gpus(self) -> RenderSettings:
        """A GPU render actor renders on the GPUs Ray reserved for it and on nothing else: a GPU reserved for a
        CPU render would idle, and a GPU render without a reservation has no GPU of its own to use."""
        if (self.device == "GPU") != (self.gpus_per_worker > 0):
            raise ValueError("render.device GPU and render.gpus_per_worker > 0 go together "
                             "(Cycles renders on the GPUs Ray assigns to each actor)")
        return self


class CompositeSettings(Section):
    backgrounds_procedural: int = 16
    backgrounds_per_render: int = 1
    max_background_pixels: int = 40_000_000
    test_fraction: float = 0.2
    seed: int = 0
    workers: int = runtime(2)           # compositing actors; they share what the Lance read tasks leave (0.5 CPU)
    batch_size: int = runtime(16)
    background_source: str | None = None  # folder or URI of user background images (else procedural only)
    background_max_side: int = 1024     # ingested backgrounds are downscaled to this long side
    dynamic: bool = False               # composite on the fly in the training loader instead of writing pairs
    write_rows: int = runtime(256)      # pairs per Lake.upsert commit (resume granularity)
    limit: int | None = None            # composite at most this many renders (smoke runs)
    scale_range: tuple[float, float] = (0.45, 0.95)  # character height as a share of the canvas height
    crop_probability: float = 0.3       # share of pairs whose character is cut off by the frame
    max_cut: float = 0.35               # at most this fraction of the character's extent is cut off
    shadow_probability: float = 0.5
    brightness: float = 0.1             # global +-10 % brightness / contrast jitter (camera)
    contrast: float = 0.1
    background_jitter: float = 0.3      # hue-like gain / saturation / brightness jitter of the background only
    # Inputs as inference sees them (rembg mask, pose-estimator keypoints): share of pairs with such errors.
    estimator_noise_probability: float = 0.5
    mask_grow_max: float = 0.015        # mask dilation/erosion up to this share of the canvas's short side
    mask_holes_max: int = 3             # up to this many blobs of the character called background
    keypoint_jitter_max: float = 0.02   # keypoint jitter std up to this share of the figure's height
    left_right_swap_probability: float = 0.5  # on back views, report left as right (estimators assume front views)
    # What the compositing code makes of these settings; a new recipe (like any change above) recomposites every
    # pair. 2: where the render's frame cut the figure (busts, head shots), the cut stays on the canvas border.
    recipe: int = 2


class StandardizerSettings(Section):
    model_dir: Path | None = None       # sd15: local SD-1.5 image-variation folder
    vae_dir: Path | None = None         # sd15: local VAE folder
    width: int = 64
    height: int = 96
    # From-scratch models (every profile but sd15, which loads its own): UNets in pixel space.
    patch_size: int = 4                 # pixel-unshuffle factor: the UNets run at (height, width) / patch_size
    unet_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention_levels: int | None = None  # UNet levels (from the top) with reference/cross attention; None: all but the lowest
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "sample"  # x0: learns fastest from scratch
    fbdm: bool = True
    rpim: bool = True
    frame_reference: bool = False       # crop the reference to its figure's box (serialgen/models/framing.py)
    steps: int = 60
    batch_size: int = 2
    learning_rate: float = 1e-4
    seed: int = 0
    inference_steps: int = 20
    guidance_scale: float = 3.5
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    checkpoint_dir: Path | None = None  # None: <lake>/_checkpoints (local lakes only)
    run_name: str = "standardizer"      # training folder under checkpoint_dir; resume continues it
    checkpoint_every: int = runtime(50)  # steps between resumable checkpoints (and at the end); 0: none
    checkpoints_total_limit: int = runtime(2)
    validate_every: int = 0             # steps between validations; 0: only at the end
    validation_pairs: int = 4           # held-out (test split) pairs standardized per validation
    noise_offset: float = 0.05
    snr_gamma: float | None = 5.0       # min-SNR loss weighting; None: plain MSE
    high_noise_share: float = 0.0       # share of samples with t drawn from the noisier half (where the reference decides)
    reference_dropout: float = 0.1      # classifier-free guidance: drop the reference this often
    colour_augment: float = added(0.0)  # share of pairs whose reference and target turn hue together (training/colour.py)
    self_reference: float = added(0.0)  # share of pairs given their own target (standard view, mask, pose) as reference
    token_positions: bool = added(False)  # add each token's place to both UNets' attention (models/token_positions.py)
    train_image_encoder: bool = added(False)  # train the cross-attention's image encoder too (from scratch: random)
    colour_embedding: float = added(0.0)  # weight of a loss making the trained image embedding's first 9 numbers
    #                                       the target's band colours (training/standardizer.py: colour_embedding_loss)

    @model_validator(mode="after")
    def _colour_embedding_trains_the_encoder(self) -> StandardizerSettings:
        if self.colour_embedding > 0 and not self.train_image_encoder:
            raise ValueError("standardizer.colour_embedding > 0 needs standardizer.train_image_encoder: the loss trains "
                             "the image encoder")
        return self
    ema_decay: float | None = None      # None: no EMA; else EMA weights are validated and exported
    lr_warmup_steps: int = 0
    lr_schedule: Literal["constant_with_warmup", "cosine"] = "constant_with_warmup"  # cosine: to 0 at `steps`
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    num_workers: int = runtime(1)       # data-loader processes (spawned: Lance is not fork-safe); 0: in-process
    log_every: int = runtime(10)


class PreprocessingSettings(Section):
    """Background masks (rembg, U2-Net convention) and reference poses (DWPose convention), as ONNX files.

    Real weights only from these local files; None in the offline profiles (tiny, small): the models
    `train-preprocessors` wrote to ``<lake>/_checkpoints/preprocessors/``.
    """
    mask_model: Path | None = None      # U2-Net-convention ONNX, e.g. ~/.u2net/u2net.onnx or isnet-anime.onnx
    pose_detector: Path | None = None   # DWPose's YOLOX person detector, e.g. yolox_l.onnx
    pose_model: Path | None = None      # DWPose's whole-body SimCC model, dw-ll_ucoco_384.onnx
    detection_threshold: float = 0.3    # person boxes scoring below are ignored (DWPose: 0.3)
    keypoint_threshold: float = 0.3     # a keypoint counts as visible above this score (DWPose: 0.3)
    # train-preprocessors (tiny): small nets trained on `pairs`, exported in the real files' conventions
    mask_steps: int = 120
    pose_steps: int = 240
    detector_steps: int = 600
    batch_size: int = 16
    learning_rate: float = 3e-3
    seed: int = 0
    detector_size: int = 64             # tiny detector's square input (YOLOX-l: 640)
    pose_height: int = 64               # tiny pose net's input (dw-ll_ucoco_384: 384 x 288)
    pose_width: int = 48
    pck_threshold: float = 0.1          # PCK: a keypoint is correct within this share of the box's long side


class IngestSettings(Section):
    images: str | None = None           # folder, URI or CSV/Parquet list of real images; None: procedural default
    captions: str | None = None         # CSV/Parquet list: path, caption, domain, character_id (all but path optional)
    max_pixels: int = 50_000_000        # decompression-bomb limit, checked from the header before decoding
    max_bytes: int = 64 * 1024 * 1024   # files larger than this are refused unread
    test_fraction: float = 0.2
    batch_size: int = runtime(32)       # images per commit (resume granularity)
    procedural_images: int = 24         # default source: held-out composited pairs, as image files


class StandardizeSettings(Section):
    model_dir: Path | None = None       # a Standardizer folder; None: the latest completed train-standardizer run's
    workers: int = runtime(1)           # standardizer replicas (Ray actor pool); one per GPU on a cluster
    gpus_per_worker: float = runtime(0.0)
    batch_size: int = runtime(4)        # images per DDIM batch
    write_rows: int = runtime(8)        # rows per Lake.upsert commit (resume granularity)
    seed: int = 0                       # image i is sampled with seed hash(seed, image_id)
    limit: int | None = None
    min_foreground: float = 0.01        # a mask covering less of the image counts as empty


class PersonalizerSettings(Section):
    # SDXL base folder (unet/, vae/, text_encoder(_2)/, tokenizer(_2)/, scheduler/) and a
    # CLIPVisionModelWithProjection folder (ViT-H/14). Offline profiles: None = the base `train-base` exported.
    model_dir: Path | None = None
    image_encoder_dir: Path | None = None
    width: int = 64
    height: int = 96
    mode: Literal["two_stage", "paired_one_stage", "unpaired"] = "two_stage"  # training pairs (paper Table 2)
    image_tokens: int = 257             # 257 = every encoder token ("full" layout); other N: N tokens (Fig. 13)
    # An exported IP-Adapter (stock layout, the same image_tokens) the adapter starts from, as the paper starts
    # from a released one. Offline profiles, None: the adapter `train-base` trained with its base, if it has one.
    init_adapter: Path | None = None
    standardizer_version: str | None = None  # `standardized` rows used by two_stage; None: the newest version
    steps: int = 40
    batch_size: int = 2
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    seed: int = 0
    text_dropout: float = 0.05          # CFG dropout, per sample: text only (zero text embeddings, as SDXL's
    image_dropout: float = 0.05         # force_zeros_for_empty_prompt), image only (encoder on zero pixels),
    both_dropout: float = 0.05          # or both
    high_noise_share: float = 0.0       # share of samples with t drawn from the noisier half (where the reference decides)
    noise_offset: float = 0.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    checkpoint_dir: Path | None = None  # None: <lake>/_checkpoints/personalizer/<mode> (local lakes only)
    checkpoint_every: int = runtime(20)  # steps between resumable checkpoints (and at the end); 0: none
    checkpoints_total_limit: int = runtime(2)
    ema_decay: float | None = None      # None: no EMA; else the EMA adapter is evaluated and exported
    lr_warmup_steps: int = 0
    lr_schedule: Literal["constant_with_warmup", "cosine"] = "constant_with_warmup"  # cosine: to 0 at `steps`
    max_grad_norm: float = 1.0
    num_workers: int = runtime(0)       # data-loader processes (spawned: Lance is not fork-safe); 0: in-process
    log_every: int = runtime(10)
    eval_pairs: int = 16                # held-out (test split) pairs of the end-of-training denoising loss
    inference_steps: int = 20           # DDIM steps at generation (the paper's 20)
    guidance_scale: float = 5.0
    scale: float = 1.0                  # adapter scale at generation, in [0, 2]


class BaseModelSettings(Section):
    """The personalizer's base text-to-image model when no pretrained base is configured (tiny, small):
    trained by `train-base` from scratch on the train split's renders, pairs and standards, captioned
    from their metadata, in pixel space with SDXL's conditioning (serialgen/models/sdxl.py: pixel_configs)."""

    channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = 1
    patch_size: int = 4                 # pixel-unshuffle factor: the UNet runs at (height, width) / patch_size
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "sample"  # x0: learns fastest from scratch
    # Cosine: terminal SNR ~0. SDXL's scaled_linear ends at alpha_bar 0.0047, which at 16x24 still shows the
    # image's coarse colours; the model learned to read them, so samples took their layout from the seed's
    # noise and barely from the caption (measured: x0 at t=999 moved 0.19 with the noise, 0.03 with the caption).
    beta_schedule: Literal["scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    text_dropout: float = 0.1           # captions dropped (zero text embeddings) for classifier-free guidance
    # Share of captions that also name hair and clothes with their colours: without them the base never
    # learns a conditioning path for appearance and an adapter has nothing to steer (docs/personalizer_table2.md).
    appearance_share: float = Field(0.5, ge=0.0, le=1.0)
    high_noise_share: float = 0.0       # share of samples with t drawn from the noisier half (where captions decide)
    noise_offset: float = 0.0
    # An image path trained with the UNet from the start (an IP-Adapter of personalizer.image_tokens, each image
    # given another image of its character), exported beside the base; the personalizer starts from it. Off by
    # default: on the small lake (2,500 steps x 16) it carried nothing (held-out x0 loss with the character's
    # reference 0.02552, another character's 0.02553, none 0.02548) and the base then used its captions less
    # (caption vs none -0.8 %, text-only base -15 %; docs/personalizer_table2.md, "Session 6").
    image_path: bool = False
    image_dropout: float = 0.2          # references dropped (the unconditional image): text-only generation
    both_dropout: float = 0.05          # text and reference dropped together (guidance on both)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema_decay: float | None = None
    lr_warmup_steps: int = 0
    lr_schedule: Literal["constant_with_warmup", "cosine"] = "constant_with_warmup"
    max_grad_norm: float = 1.0
    checkpoint_dir: Path | None = None  # None: <lake>/_checkpoints/base (local lakes only)
    checkpoint_every: int = runtime(50)
    checkpoints_total_limit: int = runtime(2)
    num_workers: int = runtime(0)
    log_every: int = runtime(10)


class DagSettings(Section):
    # Independent branches (ingest-real beside the synthetic half, preprocessors beside the standardizer)
    # run side by side up to this many stages; 1 (default) runs them one after another, which is as fast
    # on 2 cores and keeps every stage's torch RNG to itself.
    max_parallel: int = runtime(1)
    # A stage whose share of failed items exceeds this ends Failed (a code bug should not look like bad data).
    max_failure_share: float = 0.5


class ProbesSettings(Section):
    """Evaluation probes of the offline profiles (serialgen/probes): an identity embedder and attribute
    classifiers trained by `train-probes` on the lake's synthetic images; measuring instruments only."""

    width: int = 64
    height: int = 96
    identity_widths: tuple[int, ...] = (16, 32, 64, 96)
    attribute_widths: tuple[int, ...] = (16, 32, 48, 64)
    embedding_dim: int = 64
    identity_steps: int = 400
    attribute_steps: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    close_ups: float = 0.3              # share of identity samples cropped to the figure's top (synthetic bust/head)
    seed: int = 0
    checkpoint_dir: Path | None = None  # None: <lake>/_checkpoints/probes (local lakes only)


class EvaluateSettings(Section):
    test_set: Path | None = None        # YAML test set (configs/test_set.yaml layout); None: embedded tiny default
    clip_dir: Path | None = None        # open_clip folder (open_clip_config.json + weights; paper: ViT-H/14)
    face_model: Path | None = None      # ArcFace ONNX, e.g. <root>/models/buffalo_l/w600k_r50.onnx
    # Both set: CLIP-I / CLIP-T / Face Sim. Unset in the offline profiles (tiny, small): the probes of `train-probes`.
    scale: float | None = None          # IP-Adapter scale for generation (None: generate's default)
    standardizer_pairs: int = 4         # held-out pairs per standardizer variant (Table 3); 0: the whole test split
    user_study_items: int = 20          # (character, prompt) items on the blind user-study sheet
    seed: int = 0                       # shuffles the user-study sheet
    report_dir: Path | None = None      # None: <lake>/_reports/evaluate (local lakes)


class Settings(BaseSettings):
    """The resolved configuration of one invocation."""

    model_config = SettingsConfigDict(env_prefix="SERIALGEN_", env_nested_delimiter="__", extra="forbid")

    profile: Literal["tiny", "small", "sd15", "sdxl"] = "tiny"
    lake: str = "./lake"
    storage_options: dict[str, str] = Field(default_factory=dict)
    ray: RaySettings = Field(default_factory=RaySettings)
    upkeep: UpkeepSettings = Field(default_factory=UpkeepSettings)
    assets: AssetsSettings = Field(default_factory=AssetsSettings)
    render: RenderSettings = Field(default_factory=RenderSettings)
    composite: CompositeSettings = Field(default_factory=CompositeSettings)
    standardizer: StandardizerSettings = Field(default_factory=StandardizerSettings)
    personalizer: PersonalizerSettings = Field(default_factory=PersonalizerSettings)
    base_model: BaseModelSettings = Field(default_factory=BaseModelSettings)
    dag: DagSettings = Field(default_factory=DagSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    probes: ProbesSettings = Field(default_factory=ProbesSettings)
    preprocessing: PreprocessingSettings = Field(default_factory=PreprocessingSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    standardize: StandardizeSettings = Field(default_factory=StandardizeSettings)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges profile, YAML, environment and flags itself, in that order.
        return (init_settings,)

    def open_lake(self) -> Lake:
        u = self.upkeep
        return Lake(self.lake, self.storage_options,
                    Upkeep(u.compact_every, dt.timedelta(hours=u.retain_hours), u.index_keys, u.index_min_rows))

    def section_hash(self, *sections: str) -> str:
        """A stable hash of the named sections, the cache/lineage key of a stage's config."""
        data = {s: getattr(self, s).output_settings() for s in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


#: Named profiles, as overrides of the defaults above.
PROFILES: dict[str, dict[str, Any]] = {
    # Pixel-space x0-prediction models from scratch: plain MSE (Min-SNR would mute the high-noise steps
    # that place the figure), no noise offset (meant for SD latents), and a high learning rate for the demo's
    # 60 steps (which learn a template figure, not the character).
    "tiny": {"standardizer": {"snr_gamma": None, "noise_offset": 0.0, "learning_rate": 1e-3},
             # An adapter trained from scratch on the base the pipeline trained (not a pretrained SDXL): a
             # higher learning rate than IP-Adapter's 1e-4, batches of 8.
             "personalizer": {"steps": 150, "batch_size": 8, "learning_rate": 1e-3}},
    # From scratch on CPU: 600 procedural characters, a pixel-space standardizer at 64x96, scored on
    # held-out characters (docs/standardizer_table3.md). More noisy timesteps and a cosine decay; FBDM/RPIM start
    # at scale (nothing pretrained to protect); the reference is cropped to its figure. No colour augmentation
    # (standardizer.colour_augment): on the validation half it lifted identity top-1 from 0.127 to 0.413 with
    # seed 0 and gave 0.079 with seed 1, so its gain is not established (docs/standardizer_table3.md, "Session 7").
    # Nor self_reference, token_positions, train_image_encoder or colour_embedding: none made the reference path
    # appear by 3,000 steps or rescued seed 1 beyond the recoloured template (docs/standardizer_table3.md, sessions 8-9).
    # One (trailing) DDIM step, the x0 estimate from pure noise: chosen (before the one-target fix) over 2-20
    # steps on PSNR and SSIM (benchmarks/README.md, Table 3); 20 steps still score lower.
    "small": {
        "assets": {"procedural_characters": 600},
        "render": {"poses_per_character": 6, "views_per_pose": 1, "chunk_size": 32},
        "composite": {"backgrounds_procedural": 64, "write_rows": 512},
        "standardizer": {"patch_size": 8, "unet_channels": (64, 128), "frame_reference": True,
                         "steps": 8000, "batch_size": 8,
                         "learning_rate": 4e-4, "lr_warmup_steps": 50, "lr_schedule": "cosine",
                         "high_noise_share": 0.5, "ema_decay": 0.995, "snr_gamma": None,
                         "noise_offset": 0.0, "guidance_scale": 1.0, "inference_steps": 1,
                         "checkpoint_every": 500, "validate_every": 1000,
                         "validation_pairs": 8, "num_workers": 0, "log_every": 25},
        # About 38 epochs of the identity probe over the train split's 6 k images, one torch thread; half its
        # samples synthetic close-ups (chosen on the validation half of the held-out characters, docs/probes.md).
        "probes": {"identity_steps": 5000, "attribute_steps": 3000, "batch_size": 48, "close_ups": 0.5},
        # About 6 epochs of the 6.2 k captioned train images (~20 min on 2 cores).
        "base_model": {"steps": 2500, "batch_size": 16, "lr_warmup_steps": 50, "lr_schedule": "cosine",
                       "checkpoint_every": 500, "log_every": 50},
        # Each Table 2 mode (`ablate-personalizer`): an adapter from scratch on that base, 800 steps x 16 pairs
        # (~2 epochs of the ~5.8 k train pairs); the learning rate as the tiny profile's, fixed before any scoring.
        "personalizer": {"steps": 800, "batch_size": 16, "learning_rate": 1e-3, "checkpoint_every": 400,
                         "log_every": 50},
    },
    "sd15": {
        # Render settings from benchmarks/bench_render_quality.py (3 scenes at 512x768, 1 thread, against a
        # 512-sample denoised reference): the cheapest setting whose worst scene reaches 40 dB PSNR. 4 samples,
        # OIDN FAST with prefilter FAST: 41.9 dB mean, 40.95 worst (39.4 over the figure's box alone), SSIM 0.994,
        # 1.54 CPU s per image; 64 samples with Blender's default denoiser: 51.5 dB at 17.4 CPU s. The ACCURATE
        # prefilter alone cost ~4.5 CPU s per image; adaptive sampling changed nothing up to 32 samples.
        "render": {"width": 512, "height": 768, "samples": 4, "denoise": True, "denoise_quality": "FAST",
                   "denoise_prefilter": "FAST", "poses_per_character": 3817, "views_per_pose": 1, "chunk_size": 64},
        # The paper merged backgrounds during training: no 10.5 M-row pairs table.
        "composite": {"dynamic": True},
        "standardizer": {"width": 512, "height": 768, "steps": 50_000, "batch_size": 4,
                         "learning_rate": 1e-5, "mixed_precision": "fp16", "gradient_checkpointing": True,
                         "checkpoint_every": 2000, "validate_every": 5000, "validation_pairs": 64,
                         "num_workers": 4, "log_every": 50},
        "standardize": {"batch_size": 8, "gpus_per_worker": 1.0, "write_rows": 64},
    },
    "sdxl": {
        "personalizer": {"width": 512, "height": 768, "steps": 200_000, "batch_size": 8, "mixed_precision": "fp16",
                         "gradient_checkpointing": True, "checkpoint_every": 2000, "num_workers": 4,
                         "eval_pairs": 256, "log_every": 50},
        "evaluate": {"standardizer_pairs": 0},
    },
}

#: Flat variables the README documents, beside the nested ``SERIALGEN_RAY__ADDRESS`` form.
ENV_SHORTCUTS = {"SERIALGEN_RAY_ADDRESS": ("ray", "address")}


def load_settings(config_file: str | Path | None = None, profile: str | None = None,
                  **overrides: Any) -> Settings:
    """Resolve the settings; any problem is a :class:`ConfigError` with one clear line.

    ``overrides`` are top-level fields from the command line (``lake=...``); None means unset.
    """
    file_data = _read_yaml(Path(config_file)) if config_file is not None else {}
    try:
        env_data = EnvSettingsSource(Settings)()
    except Exception as exc:  # malformed JSON in a nested SERIALGEN_* variable
        raise ConfigError(f"invalid SERIALGEN_* environment variable: {exc}") from None
    for var, path in ENV_SHORTCUTS.items():
        if os.environ.get(var):
            env_data = _deep_merge(env_data, _nest(path, os.environ[var]))
    name = profile or env_data.get("profile") or file_data.get("profile") or "tiny"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    merged = PROFILES[name]
    for layer in (file_data, env_data, {k: v for k, v in overrides.items() if v is not None}):
        merged = _deep_merge(merged, layer)
    merged["profile"] = name
    try:
        settings = Settings(**merged)
        settings.open_lake()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
    except LakeError as exc:
        raise ConfigError(str(exc)) from None
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
