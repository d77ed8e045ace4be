"""Stage driver: train the evaluation probes on the lake's synthetic images and validate them on held-out
characters (no Prefect).

Reads renders, pairs, standards (with poses, motions and backgrounds for the labels); writes the probe
folder and a `runs` row whose metrics are the held-out figures that every evaluation table quotes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serialgen.checkpoints import probes_dir
from serialgen.config import ConfigError, Settings
from serialgen.dag import config_hash
from serialgen.probes.data import read_probe_images
from serialgen.probes.model import Probes, probe_config
from serialgen.probes.training import train_appearance, train_figure, train_identity, train_scene
from serialgen.probes.validation import attribute_validation, identity_validation
from serialgen.runtime import torch_threads
from serialgen.storage.runs import StageRun, require_input

STAGE = "train-probes"
INPUTS = ["renders", "pairs", "standards", "poses", "motions", "backgrounds"]


@dataclass
class TrainProbesReport:
    run_id: str
    folder: Path
    train_images: int
    test_images: int
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


def headline(validation: dict[str, Any]) -> dict[str, float]:
    """The flat figures a `runs` row, an artifact and a table note quote."""
    out: dict[str, float] = {}
    for gallery in ("vs_standard", "across_framings"):
        for framing, scores in validation["identity"].get(gallery, {}).items():
            if isinstance(scores, dict):
                for key in ("top1", "top5", "pixels_top1", "pixels_top5"):
                    out[f"{gallery}_{framing}_{key}"] = scores[key]
    for name, scores in validation["attributes"].items():
        out[f"{name}_accuracy"], out[f"{name}_majority"] = scores["accuracy"], scores["majority"]
    return out


def run_train_probes(settings: Settings, flow_run_id: str | None = None) -> TrainProbesReport:
    """Read, train both probes, validate on the test split, save (and record) the folder."""
    lake = settings.open_lake()
    for table, producer in (("renders", "render"), ("pairs", "composite"), ("standards", "render")):
        require_input(lake, table, STAGE, producer)
    cfg = settings.probes
    folder = probes_dir(settings)
    start = time.perf_counter()
    with StageRun(lake, STAGE, config_hash(settings, STAGE), inputs=INPUTS, flow_run_id=flow_run_id) as run:
        with torch_threads(1):  # thousands of one-image ops: threads only spin against each other
            images = read_probe_images(lake, (cfg.height, cfg.width), settings.composite.test_fraction)
        train, held_out = images.where("train"), images.where("test")
        if not len(train):
            raise ConfigError(f"{STAGE}: no train-split images in lake {lake.uri} ({len(held_out)} held out): "
                              "add characters")
        read_seconds = time.perf_counter() - start
        with torch_threads(1):
            identity, identity_stats = train_identity(train, cfg)
            scene, scene_stats = train_scene(train, cfg)
            figure, figure_stats = train_figure(train, cfg)
            appearance, appearance_stats = train_appearance(train, cfg)
        probes = Probes(identity, scene, figure, appearance, probe_config(cfg))
        validation = ({"identity": identity_validation(probes, held_out),
                       "attributes": attribute_validation(probes, train, held_out)} if len(held_out)
                      else {"identity": {}, "attributes": {}})  # no held-out character: trained, not validated
        probes.config.update(validation=validation, train_characters=identity_stats["characters"],
                             train_images=len(train), test_images=len(held_out),
                             test_characters=len(set(held_out.character_ids)))
        probes.save(folder)
        run.metrics = {**headline(validation), "validation": validation, "identity_training": identity_stats,
                       "scene_training": scene_stats, "figure_training": figure_stats,
                       "appearance_training": appearance_stats,
                       "train_images": len(train),
                       "test_images": len(held_out), "held_out_characters": sorted(set(held_out.character_ids)),
                       "read_seconds": round(read_seconds, 1),
                       "seconds": round(time.perf_counter() - start, 1),
                       "version": probes.version}
        run.checkpoint = str(folder)
    return TrainProbesReport(run.run_id, folder, len(train), len(held_out), run.metrics)
