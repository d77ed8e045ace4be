"""Stage driver: the paper's evaluation (section 4) of every trained model in the lake (no Prefect).

For each personalizer mode with an adapter in its folder (:func:`serialgen.checkpoints.personalizer_dir`), the
mode's models are loaded once (:class:`serialgen.inference.generate.Generator`; one standardizer shared by the
modes that standardize), the whole test set goes through them, and the generations are scored
(:mod:`serialgen.evaluation.scoring`); each standardizer variant (FBDM x RPIM) trained into the lake is
scored by PSNR/SSIM on held-out `pairs` (Table 3). Everything lands in `evaluations`, then the report
(:mod:`serialgen.evaluation.report`) is written. A rerun with unchanged models, test set, evaluation
models and config does nothing (lineage in the `runs` row).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serialgen.checkpoints import NoModelFolder, content_version, personalizer_dir, preprocessors_dir, probes_dir
from serialgen.config import ConfigError, Settings
from serialgen.dag import OFFLINE_PROFILES, config_hash
from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import FaceEmbedder
from serialgen.evaluation.evaluators import ClipFaceEvaluator, Evaluator, ProbeEvaluator
from serialgen.evaluation.report import ReportFiles, build_tables, write_report
from serialgen.evaluation.scoring import Group, aggregate_items, evaluation_row, score_generations
from serialgen.evaluation.testset import TestSet, load_test_set
from serialgen.probes import load_probes
from serialgen.storage import Lake
from serialgen.storage.runs import StageRun, last_completed

log = logging.getLogger(__name__)
STAGE = "evaluate"
PERSONALIZER_MODES = ("two_stage", "paired_one_stage", "unpaired")
#: The exported adapter (stock diffusers ``load_ip_adapter`` weight name) that marks a trained mode folder.
ADAPTER_FILE = "ip_adapter.safetensors"
#: Modes whose adapter was trained on standardized references, so inference standardizes too.
STANDARDIZED_MODES = frozenset({"two_stage"})
#: One mode's loaded generator: (references, prompts, seeds, scale, character_id) -> that character's `generations`
#: rows, written by the caller (:class:`serialgen.inference.generate.Generator`).
GenerateFn = Callable[..., list[dict[str, Any]]]
#: Loads one mode's generator once: (settings, mode, adapter folder) -> :data:`GenerateFn`.
LoadGenerator = Callable[[Settings, str, Path], GenerateFn]


@dataclass
class StandardizerVariant:
    """A trained standardizer in the lake: the newest completed training run of one FBDM x RPIM setting."""

    label: str          # fbdm+rpim | fbdm | rpim | base
    run_id: str
    folder: Path
    fbdm: bool
    rpim: bool


@dataclass
class EvaluateReport:
    run_id: str | None
    skipped: bool
    why: str
    methods: list[str] = field(default_factory=list)
    standardizers: list[str] = field(default_factory=list)
    generations: int = 0
    evaluations: int = 0
    tables: dict[str, Any] = field(default_factory=dict)
    files: ReportFiles | None = None


def run_evaluate(settings: Settings, flow_run_id: str | None = None, force: bool = False,
                 evaluator: Evaluator | None = None, load_generator: LoadGenerator | None = None) -> EvaluateReport:
    """Generate, score and report; ``evaluator`` / ``load_generator`` default to the lake's models and
    :func:`generator_loader`."""
    lake = settings.open_lake()
    test_set_errors: list[tuple[str, str]] = []
    test_set = load_test_set(lake, settings.evaluate.test_set, lambda k, r: test_set_errors.append((k, r)))
    personalizers = personalizer_checkpoints(settings)
    standardizers = standardizer_variants(lake, settings)
    models = evaluation_models(settings)
    if not test_set.characters:
        raise FileNotFoundError(f"the test set {settings.evaluate.test_set or '(default)'} has no readable "
                                "reference image")
    if not personalizers and not standardizers:
        raise FileNotFoundError(f"no trained personalizer ({personalizer_dir(settings, '<mode>')}) or standardizer "
                                f"in lake {lake.uri}: run `serialgen train-personalizer` or `train-standardizer`")
    lineage = {"test_set": test_set.fingerprint,
               "personalizers": {mode: content_version(folder / ADAPTER_FILE) for mode, folder in personalizers.items()},
               "standardizers": {v.label: content_version(v.folder) for v in standardizers},
               "evaluator": {**{role: content_version(path) if path.exists() else None for role, path in models.items()},
                             "preprocessors": _preprocessors_version(settings)}}
    digest = config_hash(settings, STAGE)
    if not force:
        skip, why = _unchanged(lake, digest, lineage)
        if skip:
            return EvaluateReport(None, True, why)
    with StageRun(lake, STAGE, digest, inputs=["pairs", "standards"], flow_run_id=flow_run_id) as run:
        run.errors(test_set_errors)
        run.clear_errors(f"test-set/{c.character_id}" for c in test_set.characters)
        if evaluator is None:
            evaluator = load_evaluator(settings, models)
        generations = generate_test_set(settings, test_set, personalizers, load_generator or generator_loader(),
                                        run, lake)
        rows = score_generations(evaluator, generations, {c.character_id: c for c in test_set.characters},
                                 test_set.fingerprint) if generations else []
        rows += score_standardizers(settings, lake, standardizers, evaluator.details)
        lake.upsert("evaluations", rows, run.run_id)
        stored = lake.read("evaluations").to_pylist()
        tables = build_tables(stored, rows, evaluator, standardizers)
        files = write_report(report_dir(settings, lake), tables, test_set, generations, settings.evaluate)
        run.outputs = ["generations", "evaluations"] if generations else ["evaluations"]
        run.metrics = {"lineage": lineage, "generations": len(generations), "evaluations": len(rows),
                       "report": str(files.html)}
        run.checkpoint = str(files.html)   # the lineage's artifact of this stage (`serialgen info`)
        return EvaluateReport(run.run_id, False, "evaluated", sorted(personalizers), [v.label for v in standardizers],
                              len(generations), len(rows), tables, files)


def generate_test_set(settings: Settings, test_set: TestSet, personalizers: dict[str, Path],
                      load_generator: LoadGenerator, run: StageRun, lake: Lake) -> list[dict[str, Any]]:
    """Every (character, prompt, seed) through every personalizer mode, each mode's models loaded once; its rows
    are upserted into `generations` under this run. A character that fails (or every character of a mode whose
    models fail to load) is an error row."""
    rows, done = [], []
    for mode, folder in sorted(personalizers.items()):
        keys = {c.character_id: f"{mode}/{c.character_id}" for c in test_set.characters}
        try:
            generate = load_generator(settings, mode, folder)
        except (ValueError, RuntimeError) as exc:
            for key in keys.values():
                run.error(key, f"generation failed: {exc}")
            continue
        generated = []
        for character in test_set.characters:
            try:
                generated += generate([character.image], test_set.prompts, test_set.seeds,
                                      scale=settings.evaluate.scale, character_id=character.character_id)
                done.append(keys[character.character_id])
            except (ValueError, RuntimeError) as exc:
                run.error(keys[character.character_id], f"generation failed: {exc}")
        del generate   # this mode's SDXL goes before the next one loads
        if generated:
            lake.upsert("generations", generated, run.run_id)
        rows += generated
    run.clear_errors(done)
    return rows


def generator_loader() -> LoadGenerator:
    """Loads a :class:`~serialgen.inference.generate.Generator` per mode; the modes of :data:`STANDARDIZED_MODES`
    share one image standardizer, loaded when the first of them is."""
    shared: list[Any] = []

    def load(settings: Settings, mode: str, folder: Path) -> GenerateFn:
        from serialgen.inference.generate import Generator
        from serialgen.inference.standardize import ImageStandardizer

        standardizer: ImageStandardizer | bool = False
        if mode in STANDARDIZED_MODES:
            if not shared:
                shared.append(ImageStandardizer(settings))
            standardizer = shared[0]
        return Generator(settings, mode, folder, standardizer)
    return load


def score_standardizers(settings: Settings, lake: Lake, variants: Sequence[StandardizerVariant],
                        details: dict[str, str]) -> list[dict[str, Any]]:
    """PSNR/SSIM (data range 1) of each standardizer variant on the held-out pairs (Table 3), and of the
    baselines a model must beat on the same pairs: the input resized, the mean training standard view."""
    if not variants:
        return []
    import torch

    from serialgen.compositing.dynamic import pairs_dataset
    from serialgen.models.standardizer import Standardizer
    from serialgen.training.ablation import mean_training_standard, score
    from serialgen.training.standardizer import score_pairs

    rows, scored_with = [], None
    for variant in variants:
        trained = _trained_settings(variant.folder)
        cfg = settings.standardizer.model_copy(update={k: trained[k] for k in ("width", "height") if k in trained})
        data = pairs_dataset(settings, "test", (cfg.height, cfg.width))
        n = min(settings.evaluate.standardizer_pairs or len(data), len(data))
        if n == 0:
            break
        model = Standardizer.from_pretrained(variant.folder).eval()
        torch.manual_seed(cfg.seed)
        scored = score_pairs(model, data, n, cfg)
        test_set = f"pairs@{lake.version('pairs')}:test:{n}"
        group = Group(variant.label, variant.run_id, variant.run_id)
        rows += _pair_rows(test_set, group, scored.pair_ids, scored.character_ids, scored.psnr, scored.ssim,
                           {**details, "size": [cfg.height, cfg.width]})
        scored_with = scored_with or (data, n, cfg, test_set)
    if scored_with is not None:
        data, n, cfg, test_set = scored_with
        items = [data[i] for i in range(n)]
        inputs, target = (torch.stack([item[k] for item in items]) for k in ("input_image", "target_image"))
        mean = mean_training_standard(lake, settings.composite.test_fraction, (cfg.height, cfg.width))
        for name, prediction in (("input (resized)", inputs), ("mean training standard", mean.expand_as(inputs))):
            p, s = score(prediction, target)
            rows += _pair_rows(test_set, Group(f"baseline: {name}", None, None), [i["pair_id"] for i in items],
                               [i["character_id"] for i in items], p, s, {"size": [cfg.height, cfg.width]})
    return rows


def _pair_rows(test_set: str, group: Group, pair_ids: Sequence[str], character_ids: Sequence[str], psnr: Any,
               ssim: Any, details: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-pair PSNR/SSIM rows of one method and their aggregates."""
    details = {**details, "data_range": 1.0}
    per_pair = [evaluation_row(test_set, group, "standardizer", metric, float(values[i]), 1, details,
                               pair_id=pair_ids[i], character_id=character_ids[i], domain="synthetic")
                for metric, values in (("psnr", psnr), ("ssim", ssim)) for i in range(len(pair_ids))]
    return per_pair + aggregate_items(per_pair, test_set, group, "standardizer", {"data_range": 1.0})


def personalizer_checkpoints(settings: Settings) -> dict[str, Path]:
    """{mode: folder} of the trained personalizer adapters, where train-personalizer writes them
    (:func:`serialgen.checkpoints.personalizer_dir`); none on an object-store lake without a configured folder."""
    try:
        folders = {mode: personalizer_dir(settings, mode) for mode in PERSONALIZER_MODES}
    except NoModelFolder:
        return {}
    return {mode: folder for mode, folder in folders.items() if (folder / ADAPTER_FILE).is_file()}


def standardizer_variants(lake: Lake, settings: Settings) -> list[StandardizerVariant]:
    """The newest completed `train-standardizer` run's model folder for each FBDM x RPIM setting present."""
    from serialgen.models.standardizer import CONFIG_NAME

    runs = lake.read("runs", filter="stage = 'train-standardizer' AND status = 'completed'")
    newest: dict[tuple[bool, bool], StandardizerVariant] = {}
    for row in sorted(runs.to_pylist(), key=lambda r: r["finished_at"]):
        folder = Path(row["checkpoint"]) if row["checkpoint"] else None
        if folder is None or not (folder / CONFIG_NAME).is_file():
            continue
        flags = json.loads((folder / CONFIG_NAME).read_text())
        key = (bool(flags.get("fbdm")), bool(flags.get("rpim")))
        newest[key] = StandardizerVariant(variant_label(*key), row["run_id"], folder, *key)
    return [newest[k] for k in sorted(newest, reverse=True)]


def variant_label(fbdm: bool, rpim: bool) -> str:
    return "+".join(n for n, on in (("fbdm", fbdm), ("rpim", rpim)) if on) or "base"


def evaluation_models(settings: Settings) -> dict[str, Path]:
    """{role: file or folder} of the rulers: CLIP + ArcFace when both are set, else (offline profiles) the
    probes `train-probes` wrote; anything else is a ConfigError naming what to set."""
    cfg = settings.evaluate
    if cfg.clip_dir is not None and cfg.face_model is not None:
        return {"clip": Path(cfg.clip_dir), "face": Path(cfg.face_model)}
    if settings.profile in OFFLINE_PROFILES:
        return {"probes": probes_dir(settings)}
    missing = "evaluate.clip_dir (a local open_clip ViT-H/14 folder)" if cfg.clip_dir is None else \
        "evaluate.face_model (an ArcFace ONNX file, e.g. insightface's w600k_r50.onnx)"
    raise ConfigError(f"set {missing}: the {settings.profile} profile measures with CLIP and ArcFace")


def load_evaluator(settings: Settings, models: dict[str, Path]) -> Evaluator:
    """The rulers of :func:`evaluation_models`, with the lake's mask (and pose) preprocessors."""
    from serialgen.preprocessing import load_preprocessors

    preprocessors = load_preprocessors(settings)
    if "probes" in models:
        return ProbeEvaluator(load_probes(models["probes"]), preprocessors.mask)
    return ClipFaceEvaluator(ClipModel(models["clip"]), FaceEmbedder(models["face"], models["face"].stem),
                             preprocessors.mask, preprocessors.pose)


def report_dir(settings: Settings, lake: Lake) -> Path:
    if settings.evaluate.report_dir is not None:
        return Path(settings.evaluate.report_dir)
    if not lake.is_local:
        raise ConfigError(f"lake {lake.uri} is not a local folder: set evaluate.report_dir")
    return Path(lake.uri).resolve() / "_reports" / "evaluate"


def _trained_settings(model_folder: Path) -> dict[str, Any]:
    marker = model_folder.parent / "training.json"
    return json.loads(marker.read_text()) if marker.is_file() else {}


def _preprocessors_version(settings: Settings) -> str | None:
    """The mask/pose models trained for the lake (:func:`serialgen.checkpoints.preprocessors_dir`): they decide
    backgrounds and faces."""
    try:
        folder = preprocessors_dir(settings)
    except NoModelFolder:
        return None
    return content_version(folder) if folder.is_dir() else None


def _unchanged(lake: Lake, digest: str, lineage: dict[str, Any]) -> tuple[bool, str]:
    last = last_completed(lake, STAGE)
    if last is None:
        return False, "never completed"
    if last["config_hash"] != digest:
        return False, "config changed"
    if last["metrics"].get("lineage") != lineage:
        changed = sorted(k for k in lineage if last["metrics"].get("lineage", {}).get(k) != lineage[k])
        return False, f"changed: {', '.join(changed)}"
    if any(lake.version(name) != version for name, version in last["inputs"].items()):
        return False, "inputs changed: pairs"
    return True, f"unchanged since run {last['run_id']}"

