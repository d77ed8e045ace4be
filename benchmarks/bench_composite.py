"""Composite stage throughput, measured in one run.

1. kernel: the in-memory pair composer on the same renders (decode -> augment -> composite -> pose
   redraw -> PNG encode), one process, one torch thread, standards and backgrounds already cached;
   also the bare tensor kernel (arrays in, arrays out) for reference.
2. end to end: ``run_composite`` (Lance read -> Ray Data actor pool -> Lance upsert) into a lake
   without pairs, each configuration in a fresh process with a fresh local Ray of 1 or 2 CPUs.

Prints pairs/s and the ratios end-to-end / kernel and 2 CPUs / 1 CPU.

    .venv/bin/python benchmarks/bench_composite.py [--renders 1500] [--per-render 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def build_lake(lake_dir: Path, renders: int, per_render: int, width: int, height: int) -> None:
    """Renders + standards drawn with numpy (tests/composite_data.py), and procedural backgrounds."""
    from composite_data import write_characters
    from serialgen.config import load_settings
    from serialgen.stages.composite import run_composite

    settings = load_settings(lake=str(lake_dir))
    write_characters(settings.open_lake(), n_characters=max(1, renders // 10), poses=10, width=width, height=height)
    settings.composite.dynamic = True            # backgrounds only: the pairs are the measured part
    settings.ray.num_cpus = 2
    run_composite(settings)


def kernel_rate(lake_dir: Path, per_render: int, batch_size: int) -> dict[str, float]:
    import numpy as np
    import torch

    from serialgen.compositing.augment import alpha_bbox, pair_rng, sample_augmentation
    from serialgen.compositing.backgrounds import crop_background
    from serialgen.compositing.kernel import composite
    from serialgen.compositing.pairs import RENDER_COLUMNS, PairComposer
    from serialgen.config import load_settings
    from serialgen.storage.images import decode_image

    torch.set_num_threads(1)
    settings = load_settings(lake=str(lake_dir))
    settings.composite.backgrounds_per_render = per_render
    lake = settings.open_lake()
    renders = lake.read("renders", columns=RENDER_COLUMNS)
    composer = PairComposer(lake, settings.composite, [k for (k,) in lake.keys("backgrounds")])
    batches = [renders.slice(i, batch_size) for i in range(0, renders.num_rows, batch_size)]
    composer(batches[0], composer.plan(batches[0]))                      # warm: torch, caches
    composer.backgrounds.get(composer.background_ids)
    composer.standards.get(set(renders.column("character_id").to_pylist()))
    start = time.perf_counter()
    n = sum(composer(b, composer.plan(b)).num_rows for b in batches)
    with_codecs = n / (time.perf_counter() - start)

    # The bare tensor kernel on decoded arrays (what map_batches spends its arithmetic on).
    rgba = [decode_image(b, "RGBA") for b in renders.column("rgba").to_pylist()[:batch_size]]
    kp = np.asarray(renders.column("keypoints").to_pylist()[:batch_size], np.float32)
    bg_image = next(iter(composer.backgrounds.get(composer.background_ids[:1]).values()))
    augs = [sample_augmentation(pair_rng(0, str(i)), alpha_bbox(a[..., 3]), (a.shape[1], a.shape[0]),
                                settings.composite) for i, a in enumerate(rgba)]
    bgs = np.stack([crop_background(bg_image, a.background_crop, a.background_flip, (r.shape[1], r.shape[0]))
                    for a, r in zip(augs, rgba)])
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        composite(np.stack(rgba), kp, bgs, augs)
    bare = reps * len(rgba) / (time.perf_counter() - start)
    return {"kernel_pairs_per_s": with_codecs, "bare_kernel_pairs_per_s": bare, "pairs": n}


def end_to_end_rate(lake_dir: Path, cpus: int, workers: int, per_render: int, batch_size: int) -> dict[str, float]:
    """One stage run in this process: a fresh Ray of ``cpus`` CPUs, a lake copy without pairs."""
    from serialgen.config import load_settings
    from serialgen.runtime import init_ray
    from serialgen.stages.composite import run_composite

    work = Path(tempfile.mkdtemp(prefix="bench-composite-"))
    shutil.copytree(lake_dir, work / "lake")
    settings = load_settings(lake=str(work / "lake"))
    settings.ray.num_cpus = cpus
    settings.composite.workers = workers
    settings.composite.backgrounds_per_render = per_render
    settings.composite.batch_size = batch_size
    init_ray(settings.ray)                       # Ray startup is not the stage's throughput
    commits: list[tuple[float, int]] = []
    start = time.perf_counter()
    report = run_composite(settings, progress=lambda done, total: commits.append((time.perf_counter() - start, done)))
    seconds = time.perf_counter() - start
    shutil.rmtree(work)
    (t0, n0), (t1, n1) = commits[0], commits[-1]
    return {"pairs": report.pairs_written, "seconds": seconds, "pairs_per_s": report.pairs_written / seconds,
            "first_commit_s": t0, "steady_pairs_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=1500)
    parser.add_argument("--per-render", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--e2e", nargs=4, metavar=("LAKE", "CPUS", "WORKERS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.e2e:  # child process: one end-to-end measurement, JSON on the last line
        lake, cpus, workers, batch = args.e2e
        print(json.dumps(end_to_end_rate(Path(lake), int(cpus), int(workers), args.per_render, int(batch))))
        return

    lake_dir = Path(tempfile.mkdtemp(prefix="bench-composite-lake-")) / "lake"
    build_lake(lake_dir, args.renders, args.per_render, args.width, args.height)
    kernel = kernel_rate(lake_dir, args.per_render, args.batch_size)

    def e2e(cpus: int, workers: int) -> dict[str, float]:
        out = subprocess.run([sys.executable, __file__, "--per-render", str(args.per_render), "--e2e", str(lake_dir),
                              str(cpus), str(workers), str(args.batch_size)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        return json.loads(out.stdout.strip().splitlines()[-1])

    runs = {"1 CPU, 1 actor": e2e(1, 1), "2 CPUs, 1 actor": e2e(2, 1), "2 CPUs, 2 actors": e2e(2, 2)}
    load = os.getloadavg()[0]
    shutil.rmtree(lake_dir.parent)

    k = kernel["kernel_pairs_per_s"]
    print(f"composite benchmark: {kernel['pairs']} pairs ({args.renders} renders x {args.per_render} backgrounds), "
          f"{args.width}x{args.height}, batch {args.batch_size}")
    print(f"  kernel (in memory, decode+composite+pose+encode, 1 thread): {k:8.1f} pairs/s")
    bare = kernel["bare_kernel_pairs_per_s"]
    print(f"  bare tensor kernel (arrays in/out, 1 thread):             {bare:8.1f} pairs/s")
    for name, r in runs.items():
        print(f"  end to end, {name:18} {r['pairs_per_s']:8.1f} pairs/s  ({r['pairs']} pairs in {r['seconds']:.1f} s)"
              f"  ratio to kernel {r['pairs_per_s'] / k:.2f}")
        print(f"    after the first commit (at {r['first_commit_s']:.1f} s: pool start-up, first block): "
              f"{r['steady_pairs_per_s']:8.1f} pairs/s  ratio to kernel {r['steady_pairs_per_s'] / k:.2f}")
    for key in ("pairs_per_s", "steady_pairs_per_s"):
        one = runs["1 CPU, 1 actor"][key]
        print(f"  2 CPUs / 1 CPU ({'whole run' if key == 'pairs_per_s' else 'after first commit'}): "
              f"{runs['2 CPUs, 2 actors'][key] / one:.2f} with 2 actors (default), "
              f"{runs['2 CPUs, 1 actor'][key] / one:.2f} with 1 actor")
    print(f"  1-minute load average at the end: {load:.1f} (2 cores)")


if __name__ == "__main__":
    main()
