"""Render stage speed: per-image overhead, 1 vs 2 long-lived Ray workers, vs one Blender process per image.

    python benchmarks/bench_render.py [--characters 2] [--poses 8] [--baseline-images 6] [--paper] [--paper-only]
        [--paper-images 2] [--device CPU|GPU]

All figures come from one run on the same machine and the same plan (tiny profile: 128x192,
Cycles CPU, 8 samples, 1 thread per worker):
- overhead ratio = wall time per image inside the worker / time inside ``bpy.ops.render.render``;
  end-to-end ratio = the stage's whole wall time (Ray actors starting, GLB imports, lake commits) per
  image / the same render time;
- throughput of the stage with 1 and with 2 workers (2 cores);
- the common script approach: a fresh ``python`` that imports bpy, loads the character and renders
  one image (the same worker code), once per image; sequentially, and two at a time.
``--paper`` adds the worker overhead ratio and images per hour at the ``sd15`` profile's render settings
(512x768); ``--paper-only`` runs just that, ``--device GPU`` on one GPU (images per GPU-hour).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from render_data import character_glbs, fill_lake, pose_rows  # noqa: E402

from serialgen.config import RaySettings, load_settings  # noqa: E402


def one_image(lake: str, character_id: str, pose_id: str, view_id: int, out: str) -> None:
    """The script approach's child: import bpy, load one character, render one image, write a PNG."""
    from serialgen.render.actor import blender_sized_for
    from serialgen.synthetic.render_plan import RenderItem, stable_seed

    settings = load_settings(lake=lake)
    with blender_sized_for(settings.render.threads_per_worker):   # as in the stage's actors
        from serialgen.render.worker import RenderWorker
    lake_ = settings.open_lake()
    glb = lake_.read("characters", filter=f"character_id = '{character_id}'").column("normalized_glb")[0].as_py()
    pose = lake_.read("poses", filter=f"pose_id = '{pose_id}'").to_pylist()[0]
    item = RenderItem(character_id, pose_id, view_id, stable_seed(settings.render.seed, character_id, pose_id, view_id))
    result = RenderWorker(settings.render).render_chunk(character_id, glb, [item],
                                                        {pose_id: (pose["bones"], pose["rotations"])}, standard=False)
    Path(out).write_bytes(result.renders[0]["rgba"])


def stage(lake: str, workers: int, n_poses: int) -> dict:
    from serialgen.stages.render import run_render

    settings = load_settings(lake=lake)
    settings.render.workers = workers
    settings.render.poses_per_character = n_poses
    settings.render.views_per_pose = 1
    report = run_render(settings)
    if report.failed or report.standards_failed:
        raise RuntimeError(f"render failures: {report.error_examples}")
    n = report.rendered + report.standards_rendered
    return {"images": n, "seconds": report.seconds, "images_per_s": n / report.seconds,
            "overhead_ratio": report.overhead_ratio,
            "end_to_end_ratio": report.seconds / n / (report.render_seconds / report.rendered)}


def script_approach(lake: str, keys: list[tuple[str, str, int]], parallel: int, out: Path) -> dict:
    def spawn(i_key):
        i, (cid, pid, vid) = i_key
        subprocess.run([sys.executable, __file__, "--one", lake, cid, pid, str(vid), str(out / f"{i}.png")],
                       check=True, capture_output=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(spawn, enumerate(keys)))
    seconds = time.perf_counter() - start
    return {"images": len(keys), "seconds": seconds, "images_per_s": len(keys) / seconds}


def paper_ratio(device: str, n: int) -> dict:
    """The sd15 profile's renders in this process: render time, overhead ratio and images per device-hour.

    On a GPU (``--device GPU``) the worker renders on the GPU Ray would assign an actor with one GPU:
    the first of ``CUDA_VISIBLE_DEVICES``, else GPU 0.
    """
    from serialgen.render.worker import RenderWorker
    from serialgen.synthetic.render_plan import plan_character

    gpu = device == "GPU"
    settings = load_settings(profile="sd15", render={"device": device, "gpus_per_worker": float(gpu)}).render
    gpu_ids = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[:1] if gpu else []
    glbs = character_glbs([11])
    cid = next(iter(glbs))
    poses = {r["pose_id"]: (r["bones"], r["rotations"]) for r in pose_rows(n)}
    worker = RenderWorker(settings, gpu_ids)
    result = worker.render_chunk(cid, glbs[cid], plan_character(cid, sorted(poses), n, 1, 0), poses, standard=False)
    if result.errors:
        raise RuntimeError(f"paper renders failed: {result.errors}")
    return {"images": n, "device": device, "samples": settings.samples, "denoise": settings.denoise,
            "render_s_per_image": sum(result.render_seconds) / n,
            "overhead_ratio": sum(result.item_seconds) / sum(result.render_seconds),
            f"images_per_{'gpu' if gpu else 'core'}_hour": 3600 * n / sum(result.item_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--characters", type=int, default=2)
    parser.add_argument("--poses", type=int, default=24)
    parser.add_argument("--baseline-images", type=int, default=6)
    parser.add_argument("--paper", action="store_true", help="add the sd15 profile's renders (512x768)")
    parser.add_argument("--paper-only", action="store_true", help="only --paper, without the stage runs")
    parser.add_argument("--paper-images", type=int, default=2)
    parser.add_argument("--device", choices=("CPU", "GPU"), default="CPU", help="device of the --paper renders")
    parser.add_argument("--one", nargs=5, metavar=("LAKE", "CHARACTER", "POSE", "VIEW", "OUT"))
    args = parser.parse_args()
    if args.one:
        lake, cid, pid, vid, out = args.one
        return one_image(lake, cid, pid, int(vid), out)

    if args.paper_only:
        return print(json.dumps(paper_ratio(args.device, args.paper_images), indent=2))
    from serialgen.runtime import init_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-render-"))
    glbs = character_glbs(list(range(1, args.characters + 1)))
    lakes = {w: str(tmp / f"lake{w}") for w in (1, 2)}
    for lake in lakes.values():
        fill_lake(load_settings(lake=lake).open_lake(), glbs, args.poses)
    init_ray(RaySettings(num_cpus=2))   # started before timing: both runs find it up
    figures = {f"stage, {w} worker{'s' * (w > 1)}": stage(lake, w, args.poses) for w, lake in lakes.items()}
    keys = [tuple(k) for k in zip(*(load_settings(lake=lakes[1]).open_lake().read("renders").column(c).to_pylist()
                                   for c in ("character_id", "pose_id", "view_id")))][:args.baseline_images]
    for parallel in (1, 2):
        figures[f"one process per image, {parallel} at a time"] = script_approach(lakes[1], keys, parallel, tmp)
    if args.paper:
        figures["paper profile 512x768, 1 worker (in process)"] = paper_ratio(args.device, args.paper_images)
    figures["load average (1 min) at the end"] = os.getloadavg()[0]
    print(json.dumps(figures, indent=2))
    best = figures["stage, 2 workers"]["images_per_s"]
    print(f"2 vs 1 workers: {best / figures['stage, 1 worker']['images_per_s']:.2f}x; "
          f"2 workers vs one process per image (2 at a time): "
          f"{best / figures['one process per image, 2 at a time']['images_per_s']:.2f}x")


if __name__ == "__main__":
    main()
