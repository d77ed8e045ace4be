"""Every lake table's pyarrow schema and key, defined once.

Image columns hold encoded bytes (PNG for RGBA and masks, PNG/WebP for RGB).
Keypoints are fixed-size lists in OpenPose/COCO-18 body order, each (x, y, visibility),
so DuckDB, Polars and PyTorch read them without our code.
Every row carries ``run_id`` (the stage run that wrote it) and ``written_at``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

NUM_KEYPOINTS = 18
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)

IMAGE = pa.large_binary()
KEYPOINTS = pa.list_(pa.list_(pa.float32(), 3), NUM_KEYPOINTS)
#: 3x4 camera-to-world matrix (row major) followed by focal length (mm) and sensor width (mm).
CAMERA = pa.list_(pa.float32(), 14)
JSON = pa.string()

PROVENANCE = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("written_at", pa.timestamp("us", tz="UTC"), nullable=False),
]


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its name, its key columns (upsert target) and its schema."""

    name: str
    key: tuple[str, ...]
    schema: pa.Schema

    @property
    def payload_schema(self) -> pa.Schema:
        """The schema a stage provides: everything but the provenance columns."""
        drop = {f.name for f in PROVENANCE}
        return pa.schema([f for f in self.schema if f.name not in drop])


#: Marks key columns for Lance: concurrent merge_inserts of the same new key then conflict and retry
#: (without it both writers insert the key and the table holds it twice).
PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}


def _spec(name: str, key: tuple[str, ...], *fields: pa.Field) -> TableSpec:
    keyed = [f.with_nullable(False).with_metadata(PRIMARY_KEY) if f.name in key else f for f in fields]
    return TableSpec(name, key, pa.schema([*keyed, *PROVENANCE]))


F = pa.field

CHARACTERS = _spec(
    "characters", ("character_id",),
    F("character_id", pa.string()),            # content hash of the source file
    F("source_uri", pa.string()),
    F("format", pa.string()),                  # glb | gltf | fbx | blend
    F("status", pa.string()),                  # accepted | rejected
    F("reason", pa.string()),                  # why rejected (null when accepted)
    F("n_bones", pa.int32()),
    F("n_canonical_bones", pa.int32()),
    F("height_m", pa.float32()),
    F("signature", pa.list_(pa.float32())),    # geometry signature for duplicate detection
    F("normalized_glb", IMAGE),                # the character after normalisation, as GLB bytes
    F("thumbnail", IMAGE),
    F("attributes", JSON),                     # generator parameters or importer notes
)

MOTIONS = _spec(
    "motions", ("motion_id",),
    F("motion_id", pa.string()),
    F("source_uri", pa.string()),
    F("format", pa.string()),                  # bvh | fbx | glb | procedural
    F("name", pa.string()),
    F("n_frames", pa.int32()),
    F("fps", pa.float32()),
    F("n_poses", pa.int32()),                  # unique poses contributed after dedup
)

POSES = _spec(
    "poses", ("pose_id",),
    F("pose_id", pa.string()),
    F("motion_id", pa.string()),
    F("frame", pa.int32()),
    F("bones", pa.list_(pa.string())),         # canonical bone names, same order as rotations
    F("rotations", pa.list_(pa.list_(pa.float32(), 4))),  # local quaternions (w, x, y, z)
)

RENDERS = _spec(
    "renders", ("character_id", "pose_id", "view_id"),
    F("character_id", pa.string()),
    F("pose_id", pa.string()),
    F("view_id", pa.int32()),
    F("rgba", IMAGE),                          # PNG, transparent background
    F("mask", IMAGE),                          # PNG, 8-bit foreground mask
    F("keypoints", KEYPOINTS),                 # pixels, visibility 0/1
    F("pose_image", IMAGE),                    # OpenPose-coloured skeleton, PNG
    F("camera", CAMERA),
    F("expression", pa.string()),              # "neutral" or "key:weight,..." (allow-listed expression keys)
    F("framing", pa.string()),                 # full | bust | head | cutoff-<side>-<share out of frame>
    F("width", pa.int32()),
    F("height", pa.int32()),
    F("seed", pa.int64()),
    F("render_seconds", pa.float32()),
)

STANDARDS = _spec(
    "standards", ("character_id",),
    F("character_id", pa.string()),
    F("image", IMAGE),                         # RGB on white, A-pose, front view
    F("mask", IMAGE),
    F("keypoints", KEYPOINTS),
    F("pose_image", IMAGE),
    F("width", pa.int32()),
    F("height", pa.int32()),
)

BACKGROUNDS = _spec(
    "backgrounds", ("background_id",),
    F("background_id", pa.string()),
    F("source_uri", pa.string()),              # file URI or procedural://<seed>
    F("image", IMAGE),
    F("width", pa.int32()),
    F("height", pa.int32()),
)

PAIRS = _spec(
    "pairs", ("pair_id",),
    F("pair_id", pa.string()),
    F("character_id", pa.string()),
    F("pose_id", pa.string()),
    F("view_id", pa.int32()),
    F("background_id", pa.string()),
    F("split", pa.string()),                   # train | test, by character
    F("input_image", IMAGE),                   # composited RGB
    F("background_mask", IMAGE),               # m_b at input resolution, 255 = background; as a segmenter gives it
    F("reference_keypoints", KEYPOINTS),       # as a pose estimator gives them (augmentation.estimator)
    F("reference_pose_image", IMAGE),          # drawn from reference_keypoints
    F("true_background_mask", IMAGE),          # exact mask (label for segmenter training)
    F("true_reference_keypoints", KEYPOINTS),  # exact keypoints (label for pose-estimator training)
    F("augmentation", JSON),
    # The target is the character's `standards` row (image, keypoints, pose image), joined by character_id
    # when read (storage.torch_reader): stored once per character, not once per pair.
)

#: Bounding box (left, top, right, bottom) in pixels, e.g. where the original image sits in a padded frame.
BOX = pa.list_(pa.int32(), 4)

REAL_IMAGES = _spec(
    "real_images", ("image_id",),
    F("image_id", pa.string()),                # content hash of the decoded, orientation-corrected pixels
    F("source_uri", pa.string()),
    F("image", IMAGE),                         # RGB PNG, or RGBA PNG when the source had real transparency
    F("has_alpha", pa.bool_()),                # the source carried a usable alpha (used as the mask)
    F("caption", pa.string()),
    F("domain", pa.string()),                  # anime | real | null (unknown)
    F("character_id", pa.string()),            # when known: keeps one character's images on one split side
    F("split", pa.string()),                   # train | test (deterministic, by character_id else image_id)
    F("source_mode", pa.string()),             # PIL mode of the source file (L, LA, P, RGBA, CMYK, I;16, ...)
    F("width", pa.int32()),
    F("height", pa.int32()),
)

STANDARDIZED = _spec(
    "standardized", ("image_id", "model_version"),
    F("image_id", pa.string()),
    F("model_version", pa.string()),           # standardizer version (its checkpoint's run/config hash)
    F("image", IMAGE),                         # standardized RGB (white background, A-pose, front)
    F("input_mask", IMAGE),                    # background mask of the padded input, 255 = background
    F("reference_keypoints", KEYPOINTS),       # padded-frame pixels, third value = detector score
    F("reference_pose_image", IMAGE),
    F("target_keypoints", KEYPOINTS),          # the canonical standard skeleton used
    F("padding_box", BOX),                     # where the original image sits in the padded frame
    F("width", pa.int32()),
    F("height", pa.int32()),
    F("seed", pa.int64()),
    F("steps", pa.int32()),
    F("guidance_scale", pa.float32()),
    F("sampler", pa.string()),
    F("preprocessors", JSON),                  # {"mask": name@version, "pose": name@version}
    F("seconds", pa.float32()),                # model time per image
)

PERSONALIZER_PAIRS = _spec(
    "personalizer_pairs", ("mode", "pair_id"),
    F("mode", pa.string()),                    # two_stage | paired_one_stage | unpaired
    F("pair_id", pa.string()),
    F("reference_id", pa.string()),            # image_id (or generation_id) of the reference side
    F("reference_source", pa.string()),        # standardized | real_images | generations
    F("reference_image", IMAGE),
    F("target_id", pa.string()),               # image_id (real_images) or generation_id (generations)
    F("target_source", pa.string()),           # real_images | generations
    F("target_image", IMAGE),
    F("caption", pa.string()),                 # real_images.caption, else a template by domain; or the prompt
    F("standardizer_version", pa.string()),
    F("split", pa.string()),
)

GENERATIONS = _spec(
    "generations", ("generation_id",),
    F("generation_id", pa.string()),           # hash of (method, reference ids, prompt, seed, scale, versions)
    F("method", pa.string()),                  # personalizer mode that made it (two_stage, unpaired, ...)
    F("character_id", pa.string()),
    F("reference_ids", pa.list_(pa.string())), # image ids of the reference(s)
    F("standardized_reference", IMAGE),        # what the adapter saw (null with --no-standardize)
    F("prompt", pa.string()),
    F("prompt_category", pa.string()),         # action | background | viewpoint | expression | other
    F("seed", pa.int64()),
    F("scale", pa.float32()),
    F("sampler", pa.string()),
    F("steps", pa.int32()),
    F("standardizer_version", pa.string()),
    F("personalizer_version", pa.string()),
    F("image", IMAGE),
    F("width", pa.int32()),
    F("height", pa.int32()),
)

EVALUATIONS = _spec(
    "evaluations", ("evaluation_id",),
    F("evaluation_id", pa.string()),           # hash of every column below that names the score (not its value)
    F("test_set", pa.string()),                # fingerprint of the test set (or held-out pairs) scored
    F("method", pa.string()),                  # personalizer mode (two_stage, ...) or standardizer variant (fbdm+rpim, ...)
    F("model_version", pa.string()),           # personalizer version, or the standardizer's for stage standardizer
    F("standardizer_version", pa.string()),    # the standardizer that made the references (null without)
    F("stage", pa.string()),                   # standardized | personalized | standardizer
    F("metric", pa.string()),                  # clip_i | clip_t | face_sim | ap_clip_i | psnr | ssim
    F("value", pa.float64()),                  # null: not measurable (no face found)
    F("n", pa.int64()),                        # items (or image pairs for ap_clip_i) behind the value
    F("generation_id", pa.string()),           # set on per-generation scores; null on aggregates
    F("pair_id", pa.string()),                 # set on per-pair standardizer scores (held-out `pairs`)
    F("character_id", pa.string()),            # set on per-generation and per-character scores
    F("domain", pa.string()),                  # subset: anime | real | synthetic | all
    F("prompt_category", pa.string()),         # subset: action | background | viewpoint | expression | all
    F("details", JSON),                        # evaluator (CLIP / face model labels), face detection rate, ...
)

RUNS = _spec(
    "runs", ("run_id",),
    F("stage", pa.string()),
    F("status", pa.string()),                  # running | completed | failed
    F("started_at", pa.timestamp("us", tz="UTC")),
    F("finished_at", pa.timestamp("us", tz="UTC")),
    F("config_hash", pa.string()),
    F("inputs", JSON),                         # {table: version} read by the run
    F("outputs", JSON),                        # {table: version} written by the run
    F("metrics", JSON),
    F("checkpoint", pa.string()),
    F("flow_run_id", pa.string()),
)

ERRORS = _spec(
    "errors", ("stage", "key"),
    F("stage", pa.string()),
    F("key", pa.string()),
    F("reason", pa.string()),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        CHARACTERS, MOTIONS, POSES, RENDERS, STANDARDS, BACKGROUNDS, PAIRS,
        REAL_IMAGES, STANDARDIZED, PERSONALIZER_PAIRS, GENERATIONS, EVALUATIONS, RUNS, ERRORS,
    )
}


def spec(name: str) -> TableSpec:
    """The spec of table ``name``; a clear error for an unknown table."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None
