"""The ingest-real stage: real character images (folder, URI or CSV/Parquet list) -> `real_images` (no Prefect).

Files are listed by the assets stage's source reader (local folders, ``file://``, object stores).
Each image is keyed by the hash of its decoded, orientation-corrected pixels (duplicates collapse),
split train/test by its character id when the list gives one (else by image id), and stored as PNG
with its caption, domain and source mode. Unusable files go to `errors` with the reason; files
already ingested are skipped, so a rerun adds nothing.

Without ``--images`` (the tiny profile, offline) the stage ingests images the pipeline made itself:
composited pairs and RGBA renders spread over all characters, exported as PNG files with their
character id (so the split follows the characters' split), and both the photo path and the own-alpha
path run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serialgen.compositing.backgrounds import IMAGE_SUFFIXES
from serialgen.compositing.split import split_of
from serialgen.config import ConfigError, Settings
from serialgen.dag import config_hash
from serialgen.real_images import UnusableImage, pixel_id, read_real_image
from serialgen.sources import list_sources
from serialgen.storage.images import encode_png
from serialgen.storage.runs import StageRun

STAGE = "ingest-real"
LIST_SUFFIXES = (".csv", ".parquet")
DOMAINS = ("anime", "real")


@dataclass(frozen=True)
class IngestReport:
    run_id: str
    files: int
    skipped: int
    ingested: int                # new images written
    duplicates: int              # files whose pixels were already ingested from another file
    errors: int
    images: int
    seconds: float
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Entry:
    uri: str
    path: Path
    caption: str | None = None
    domain: str | None = None
    character_id: str | None = None


def run_ingest_real(settings: Settings, images: str | None = None, captions: str | None = None,
                    flow_run_id: str | None = None,
                    progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Ingest every new image of ``images`` (default ``ingest.images``; None: the procedural default)."""
    cfg = settings.ingest
    images, captions = images or cfg.images, captions or cfg.captions
    lake = settings.open_lake()
    start = time.perf_counter()
    with StageRun(lake, STAGE, config_hash(settings, STAGE), flow_run_id=flow_run_id) as run, \
            tempfile.TemporaryDirectory(prefix="serialgen-ingest-") as scratch:
        entries = (_list_entries(settings, images, captions, Path(scratch)) if images
                   else _procedural_entries(settings, Path(scratch)))
        done = set(lake.read("real_images", columns=["source_uri"]).column("source_uri").to_pylist())
        known = {k for (k,) in lake.keys("real_images")}
        todo = [e for e in entries if e.uri not in done]
        ingested, duplicates, rows = 0, 0, []
        for i, entry in enumerate(todo, 1):
            try:
                row = _row(entry, cfg.max_pixels, cfg.max_bytes, cfg.test_fraction)
                if row["image_id"] in known:  # the same pixels from another file: the first source stays
                    duplicates += 1
                else:
                    known.add(row["image_id"])
                    rows.append(row)
            except (UnusableImage, OSError) as exc:
                run.error(entry.uri, str(exc))
            if rows and (len(rows) >= cfg.batch_size or i == len(todo)):
                ingested += lake.upsert("real_images", rows, run.run_id)
                run.clear_errors(r["source_uri"] for r in rows)
                rows = []
                if progress is not None:
                    progress(i, len(todo))
        run.outputs = ["real_images"]
        seconds = time.perf_counter() - start
        run.metrics = {"files": len(entries), "ingested": ingested, "duplicates": duplicates}
    return IngestReport(run.run_id, len(entries), len(entries) - len(todo), ingested, duplicates, run.n_errors,
                        lake.count("real_images"), round(seconds, 2), images or "procedural")


def _row(entry: _Entry, max_pixels: int, max_bytes: int, test_fraction: float) -> dict:
    pixels, mode = read_real_image(entry.path.read_bytes(), max_pixels, max_bytes)
    image_id = pixel_id(pixels)
    return {"image_id": image_id, "source_uri": entry.uri, "image": encode_png(pixels),
            "has_alpha": pixels.shape[2] == 4, "caption": entry.caption, "domain": entry.domain,
            "character_id": entry.character_id, "split": split_of(entry.character_id or image_id, test_fraction),
            "source_mode": mode, "width": pixels.shape[1], "height": pixels.shape[0]}


def read_list(path: str | Path) -> list[dict]:
    """A CSV or Parquet list: ``path`` (required), ``caption``, ``domain`` (anime | real), ``character_id``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image list {path} does not exist")
    table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types={"character_id": pa.string(), "caption": pa.string()}))
    if "path" not in table.column_names:
        raise ConfigError(f"image list {path} has no 'path' column (columns: {', '.join(table.column_names)})")
    rows = table.to_pylist()
    bad = sorted({r.get("domain") for r in rows if r.get("domain") not in (None, *DOMAINS)}, key=str)
    if bad:
        raise ConfigError(f"image list {path}: domain must be one of {', '.join(DOMAINS)} or empty, got {bad[0]!r}")
    return rows


def _list_entries(settings: Settings, images: str, captions: str | None, scratch: Path) -> list[_Entry]:
    """The files of a folder/URI (annotated by ``captions``), or the files a list names."""
    options = dict(settings.storage_options)
    if images.lower().endswith(LIST_SUFFIXES):
        rows, base = read_list(images), Path(images).parent
        entries = []
        for row in rows:
            ref = str(row["path"])
            target = ref if "://" in ref or Path(ref).is_absolute() else str(base / ref)
            try:
                found = list_sources(target, (Path(target).suffix.lower(),), scratch, options)
            except FileNotFoundError:
                found = [(str(Path(target).resolve()), Path(target))]  # reported as unreadable when read
            entries += [_Entry(uri, path, row.get("caption"), row.get("domain"), _text(row.get("character_id")))
                        for uri, path in found]
        return entries
    entries = [_Entry(uri, path) for uri, path in list_sources(images, IMAGE_SUFFIXES, scratch, options)]
    if captions:
        notes = {}
        for row in read_list(captions):
            notes[str(row["path"])] = row
            notes[Path(str(row["path"])).name] = row
        for e in entries:
            row = notes.get(e.uri) or notes.get(str(e.path)) or notes.get(e.path.name)
            if row:
                e.caption, e.domain, e.character_id = row.get("caption"), row.get("domain"), _text(row.get("character_id"))
    return entries


def _text(value) -> str | None:
    return None if value is None else str(value)


def _procedural_entries(settings: Settings, scratch: Path) -> list[_Entry]:
    """The offline default: composited pairs (RGB) and RGBA renders, spread over the characters, as files.

    Both splits are taken: each image keeps its character id, so it lands on the same split side as its
    character's pairs (same rule and fraction); the personalizer trains on the train side and the
    held-out characters stay held out for evaluation."""
    lake = settings.open_lake()
    n = settings.ingest.procedural_images
    pairs = lake.read("pairs", columns=["pair_id", "character_id", "input_image"])
    if pairs.num_rows == 0:
        raise FileNotFoundError(f"no pairs in lake {settings.lake} to ingest by default: "
                                "run `serialgen composite` first or pass --images")
    entries = [_export(scratch, f"pairs://{row['pair_id']}", row["input_image"], row["character_id"])
               for row in _spread(pairs.sort_by("pair_id").to_pylist(), n)]
    renders = lake.read("renders", columns=["character_id", "pose_id", "view_id", "rgba"])
    renders = renders.sort_by([("character_id", "ascending"), ("pose_id", "ascending"), ("view_id", "ascending")])
    for row in _spread(renders.to_pylist(), max(1, n // 4)):
        uri = f"renders://{row['character_id']}/{row['pose_id']}/{row['view_id']}"
        entries.append(_export(scratch, uri, row["rgba"], row["character_id"]))
    return entries


def _spread(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` rows taken round-robin over their characters (every character is represented)."""
    by_character: dict[str, list[dict]] = {}
    for row in rows:
        by_character.setdefault(row["character_id"], []).append(row)
    queues = list(by_character.values())
    out: list[dict] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def _export(scratch: Path, uri: str, png: bytes, character_id: str) -> _Entry:
    path = scratch / "procedural" / (uri.replace("://", "/").replace("/", "_") + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return _Entry(uri, path, None, None, character_id)
