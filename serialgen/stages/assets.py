"""The assets stage: audited characters, motion clips and the deduplicated pose library.

Per-file bpy work (generate, import + normalise + audit, motion import + retarget) runs in
spawned worker processes (:mod:`serialgen.assets.worker`); this driver lists and hashes
the files, skips those already in the lake (by content hash), decides duplicates in a fixed
order and writes ``characters``, ``motions`` and ``poses`` with keyed upserts.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from serialgen.assets import worker as asset_worker
from serialgen.config import Settings
from serialgen.dag import config_hash
from serialgen.imaging import grid
from serialgen.sources import list_sources
from serialgen.storage import Lake
from serialgen.storage.images import decode_image
from serialgen.storage.runs import StageRun
from serialgen.synthetic import skeleton
from serialgen.synthetic.character_filter import UNREADABLE, Facts, decide
from serialgen.synthetic.poses import dedup, pose_id
from serialgen.synthetic.procedural_motion import procedural_clips

CHARACTER_SUFFIXES = (".glb", ".gltf", ".fbx", ".blend")
MOTION_SUFFIXES = (".bvh", ".fbx", ".glb", ".gltf")
POSE_BONES = [skeleton.PREFIX + b for b in skeleton.POSED_BONES]
WRITE_CHUNK = 32  # character rows per upsert (each carries a GLB and a thumbnail)


@dataclass
class AssetsReport:
    """What one run did; ``rows()`` is the artifact table."""

    run_id: str
    characters: dict[str, int] = field(default_factory=dict)   # "accepted" / reason code -> files
    characters_skipped: int = 0                                 # already audited (same content hash)
    motion_files: int = 0
    motion_files_skipped: int = 0
    motion_files_rejected: int = 0
    clips: int = 0
    sampled_poses: int = 0
    new_poses: int = 0
    total_poses: int = 0
    seconds: float = 0.0

    def rows(self) -> list[dict[str, str | int]]:
        out = [{"table": "characters", "item": "accepted", "count": self.characters.get("accepted", 0)}]
        out += [{"table": "characters", "item": f"rejected: {code}", "count": n}
                for code, n in sorted(self.characters.items()) if code != "accepted"]
        out += [{"table": "characters", "item": "skipped (already audited)", "count": self.characters_skipped},
                {"table": "motions", "item": "motion files read", "count": self.motion_files},
                {"table": "motions", "item": "motion files rejected", "count": self.motion_files_rejected},
                {"table": "motions", "item": "motion files skipped (already read)", "count": self.motion_files_skipped},
                {"table": "motions", "item": "clips", "count": self.clips},
                {"table": "poses", "item": "sampled poses", "count": self.sampled_poses},
                {"table": "poses", "item": "new unique poses", "count": self.new_poses},
                {"table": "poses", "item": "pose library size", "count": self.total_poses}]
        return out


def content_id(path: str | Path) -> str:
    """The content hash that keys a file's rows (resumability: same bytes, same id)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:24]


def _character_row(cid: str, uri: str, facts: Facts, status: str, reason: str | None, attributes: dict) -> dict:
    return {
        "character_id": cid, "source_uri": uri, "format": facts.format, "status": status, "reason": reason,
        "n_bones": facts.n_bones, "n_canonical_bones": facts.n_canonical_bones, "height_m": facts.height_m,
        "signature": None if facts.signature is None else facts.signature.tolist(),
        "normalized_glb": facts.normalized_glb if status == "accepted" else None,
        "thumbnail": facts.thumbnail, "attributes": json.dumps(attributes, sort_keys=True),
    }


def _audit_characters(settings: Settings, lake: Lake, run: StageRun, pool: asset_worker.WorkerPool,
                      sources: list[tuple[str, Path, dict]], report: AssetsReport) -> None:
    cfg = settings.assets
    done = {k[0] for k in lake.keys("characters")}
    todo: dict[str, tuple[str, Path, dict]] = {}
    for uri, path, attributes in sources:
        cid = content_id(path)
        if cid in done or cid in todo:
            report.characters_skipped += 1
        else:
            todo[cid] = (uri, path, attributes)
    order = sorted(todo, key=lambda c: todo[c][0])  # a fixed order decides which copy is the original
    by_path = {str(todo[cid][1]): cid for cid in order}
    accepted_rows = lake.read("characters", columns=["character_id", "signature"], filter="status = 'accepted'")
    accepted = {cid: np.asarray(sig, np.float32) for cid, sig in zip(accepted_rows.column("character_id").to_pylist(),
                                                                     accepted_rows.column("signature").to_pylist())}
    results: dict[str, Facts] = {}
    rows, errors, ok, decided = [], [], [], 0

    def flush() -> None:
        lake.upsert("characters", rows, run.run_id)
        run.errors(errors)
        run.clear_errors(ok)
        for pending in (rows, errors, ok):
            pending.clear()

    size = (cfg.thumbnail_width, cfg.thumbnail_height)
    for path, facts in pool.map(asset_worker.audit_batch, list(by_path), cfg.batch_size, size, cfg.thumbnail_samples):
        if isinstance(facts, asset_worker.WorkerCrash):
            facts = Facts(Path(path).suffix.lstrip(".").lower(), error=str(facts))
        results[by_path[path]] = facts
        while decided < len(order) and order[decided] in results:  # decide in order as the prefix completes
            cid = order[decided]
            decided += 1
            uri, _, attributes = todo[cid]
            facts = results.pop(cid)
            status, reason, duplicate_of = decide(facts, accepted, cfg.min_canonical_bones, cfg.duplicate_threshold)
            if status == "accepted":
                accepted[cid] = facts.signature
                ok.append(uri)
            elif reason.startswith(UNREADABLE):
                errors.append((uri, reason))
            outcome = status if reason is None else reason.split(":")[0]
            report.characters[outcome] = report.characters.get(outcome, 0) + 1
            rows.append(_character_row(cid, uri, facts, status, reason,
                                       {**attributes, "normalisation": facts.notes, "duplicate_of": duplicate_of}))
            if len(rows) >= WRITE_CHUNK:
                flush()
    flush()


def _read_motions(settings: Settings, lake: Lake, run: StageRun, pool: asset_worker.WorkerPool,
                  sources: list[tuple[str, Path]], report: AssetsReport) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """(motions row, sampled frames, rotations) of every new clip in the motion files."""
    known = {k[0].rsplit("-", 1)[0] for k in lake.keys("motions")}
    todo = {}
    for uri, path in sources:
        fid = "m" + content_id(path)
        if fid in known or fid in todo:
            report.motion_files_skipped += 1
        else:
            todo[fid] = (uri, path)
    by_path = {str(path): fid for fid, (_, path) in todo.items()}
    clips, errors, ok = [], [], []
    for path, result in pool.map(asset_worker.motion_batch, sorted(by_path), settings.assets.batch_size,
                                 settings.assets.frame_step):
        fid = by_path[path]
        uri = todo[fid][0]
        report.motion_files += 1
        if isinstance(result, (str, asset_worker.WorkerCrash)):
            report.motion_files_rejected += 1
            errors.append((uri, f"motion file rejected: {result}"))
            continue
        ok.append(uri)
        for k, clip in enumerate(result):
            row = {"motion_id": f"{fid}-{k}", "source_uri": uri, "format": Path(path).suffix.lstrip(".").lower(),
                   "name": clip.name, "n_frames": clip.n_frames, "fps": clip.fps}
            clips.append((row, clip.frames, clip.rotations))
    run.errors(errors)
    run.clear_errors(ok)
    return clips


def _procedural_motions(settings: Settings, lake: Lake) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    cfg = settings.assets
    known = {k[0] for k in lake.keys("motions")}
    out = []
    for clip in procedural_clips(cfg.seed, cfg.motion_variants):
        motion_id = f"procedural-{clip.name}"
        if motion_id in known:
            continue
        frames = np.arange(0, clip.n_frames, cfg.frame_step)
        row = {"motion_id": motion_id, "source_uri": f"procedural://motion/{clip.name}", "format": "procedural",
               "name": clip.name, "n_frames": clip.n_frames, "fps": clip.fps}
        out.append((row, frames, clip.rotations[frames]))
    return out


def _write_poses(settings: Settings, lake: Lake, run: StageRun,
                 clips: list[tuple[dict, np.ndarray, np.ndarray]], report: AssetsReport) -> None:
    clips = sorted(clips, key=lambda c: c[0]["motion_id"])
    library = lake.read("poses", columns=["bones", "rotations"])
    existing = [r for b, r in zip(library.column("bones").to_pylist(), library.column("rotations").to_pylist())
                if b == POSE_BONES]
    candidates = np.concatenate([rot for _, _, rot in clips]) if clips else np.zeros((0, len(POSE_BONES), 4))
    keep = dedup(candidates, settings.assets.pose_dedup_threshold,
                 np.asarray(existing, np.float32) if existing else None)
    motions, poses, start = [], [], 0
    for row, frames, rotations in clips:
        mask = keep[start:start + len(frames)]
        start += len(frames)
        motions.append({**row, "n_poses": int(mask.sum())})
        poses += [{"pose_id": pose_id(row["motion_id"], int(f)), "motion_id": row["motion_id"], "frame": int(f),
                   "bones": POSE_BONES, "rotations": r.tolist()} for f, r in zip(frames[mask], rotations[mask])]
    lake.upsert("poses", poses, run.run_id)
    lake.upsert("motions", motions, run.run_id)
    report.clips = len(clips)
    report.sampled_poses = len(candidates)
    report.new_poses = len(poses)
    report.total_poses = lake.count("poses")


def run_assets(settings: Settings, characters: str | None = None, motions: str | None = None,
               procedural: int | None = None, procedural_motions: bool | None = None,
               workers: int | None = None, flow_run_id: str | None = None) -> AssetsReport:
    """Audit character files and/or ``procedural`` generated ones, read motion files and/or the
    procedural clips, and write ``characters``, ``motions`` and ``poses``.

    Sources default to ``assets.characters`` / ``assets.motions``; with none given or configured, the
    config's procedural defaults are used (the laptop default).
    """
    cfg = settings.assets
    characters, motions = characters or cfg.characters, motions or cfg.motions
    if characters is None and motions is None and procedural is None and procedural_motions is None:
        procedural, procedural_motions = cfg.procedural_characters, cfg.procedural_motions
    lake = settings.open_lake()
    started = time.perf_counter()
    # inputs: none (files, not tables; the characters/poses it reads for dedup are its own outputs)
    with StageRun(lake, "assets", config_hash(settings, "assets"), flow_run_id=flow_run_id) as run, \
            asset_worker.WorkerPool(workers or cfg.workers) as pool, \
            tempfile.TemporaryDirectory(prefix="serialgen-assets-") as tmp:
        report = AssetsReport(run.run_id)
        scratch = Path(tmp)
        char_sources: list[tuple[str, Path, dict]] = []
        if procedural:
            seeds = list(range(cfg.seed, cfg.seed + procedural))
            for seed, result in pool.map(asset_worker.generate_batch, seeds, cfg.batch_size, str(scratch)):
                if isinstance(result, asset_worker.WorkerCrash):
                    run.error(f"procedural://{seed}", str(result))
                else:
                    char_sources.append((f"procedural://{seed}", Path(result[0]), {"procedural": result[1]}))
        if characters:
            found = list_sources(characters, CHARACTER_SUFFIXES, scratch, settings.storage_options)
            char_sources += [(uri, path, {}) for uri, path in found]
        if char_sources:
            _audit_characters(settings, lake, run, pool, char_sources, report)
            run.outputs.append("characters")
        clips = []
        if motions:
            found = list_sources(motions, MOTION_SUFFIXES, scratch, settings.storage_options)
            clips += _read_motions(settings, lake, run, pool, found, report)
        if procedural_motions:
            clips += _procedural_motions(settings, lake)
        if motions or procedural_motions:
            _write_poses(settings, lake, run, clips, report)
            run.outputs += ["motions", "poses"]
        for table in run.outputs:
            lake.maintain(table)
        report.seconds = round(time.perf_counter() - started, 2)
        run.metrics = asdict(report)
    return report


def contact_sheet(thumbnails: list[bytes], columns: int = 4) -> Image.Image:
    """Tile RGBA thumbnails (same size), ``columns`` a row, onto one RGB sheet (transparency over white)."""
    images = [decode_image(t, "RGBA") for t in thumbnails]
    return Image.fromarray(grid([images[i:i + columns] for i in range(0, len(images), columns)]))


def write_contact_sheet(lake: Lake, path: str | Path, limit: int = 8, columns: int = 4) -> int:
    """Tile the thumbnails of the first ``limit`` accepted characters (by source) into ``path``; returns how many."""
    table = lake.read("characters", columns=["source_uri", "thumbnail"], filter="status = 'accepted'")
    rows = sorted(zip(table.column("source_uri").to_pylist(), table.column("thumbnail").to_pylist()),
                  key=lambda r: (len(r[0]), r[0]))[:limit]
    if not rows:
        return 0
    contact_sheet([t for _, t in rows], columns=min(columns, len(rows))).save(path)
    return len(rows)
