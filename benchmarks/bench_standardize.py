"""Standardize stage throughput on CPU, measured in one run.

1. model: one in-process :class:`ImageStandardizer` (mask + pose ONNX, pad-to-frame, DDIM with
   guidance) on the images, one torch thread, models loaded and warmed up: the pure model time.
2. pipeline: ``run_standardize`` (Lance read -> Ray Data actor pool of standardizer replicas ->
   keyed Lance upsert) on the same images in a fresh lake, for several batch sizes and actor counts,
   in one local Ray of ``--cpus`` CPUs (actor start-up and model loading included).

Prints images/s per configuration and pipeline time / model time at the same batch size (goal <= 1.15).

    .venv/bin/python benchmarks/bench_standardize.py [--images 24] [--steps 20] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from serialgen.config import load_settings
    from serialgen.stages.ingest_real import run_ingest_real
    from serialgen.inference.standardize import ImageStandardizer
    from serialgen.stages.standardize import image_seed, run_standardize
    from standardize_data import figure_scene, install_preprocessors, save_tiny_standardizer, train_tiny_preprocessors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--configs", default="1x1,4x1,4x2", help="batch x actors, comma separated")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-standardize-"))
    try:
        trained = root / "preprocessors"
        train_tiny_preprocessors(trained)
        model = save_tiny_standardizer(root / "model")
        folder = root / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        images = []
        for i in range(args.images):
            rgb = figure_scene(rng, 96, 144)[0]
            Image.fromarray(rgb).save(folder / f"{i:04d}.png")
            images.append(rgb)

        def settings_for(lake: Path, batch: int, actors: int):
            return load_settings(lake=str(lake), ray={"num_cpus": args.cpus},
                                 standardizer={"inference_steps": args.steps},
                                 standardize={"model_dir": str(model), "batch_size": batch, "workers": actors,
                                              "write_rows": batch})

        results = []
        for config in args.configs.split(","):
            batch, actors = (int(x) for x in config.split("x"))
            settings = settings_for(root / f"lake-{config}", batch, actors)
            install_preprocessors(trained, settings)
            run_ingest_real(settings, images=str(folder))
            report = run_standardize(settings)
            assert report.written == len(images), report
            results.append({"batch": batch, "actors": actors, "seconds": report.seconds,
                            "images_per_second": len(images) / report.seconds})
            print(json.dumps(results[-1]), flush=True)

        torch.set_num_threads(1)
        model_rates = {}
        for batch in sorted({r["batch"] for r in results}):
            replica = ImageStandardizer(settings_for(root / f"lake-{args.configs.split(',')[0]}", batch, 1))
            replica(images[:batch], list(range(batch)))   # warm-up
            start = time.perf_counter()
            for first in range(0, len(images), batch):
                chunk = images[first:first + batch]
                replica(chunk, [image_seed(0, str(first + k)) for k in range(len(chunk))])
            model_rates[batch] = len(images) / (time.perf_counter() - start)
            print(json.dumps({"model_only_batch": batch, "images_per_second": model_rates[batch]}), flush=True)
        print("\n| batch | actors | pipeline images/s | model-only images/s (1 thread) | pipeline time / model time |")
        print("| --- | --- | --- | --- | --- |")
        for r in results:
            ratio = model_rates[r["batch"]] / r["images_per_second"]
            print(f"| {r['batch']} | {r['actors']} | {r['images_per_second']:.3f} | {model_rates[r['batch']]:.3f} | "
                  f"{ratio:.2f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
