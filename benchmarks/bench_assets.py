"""Assets stage speed: characters audited per second and poses extracted per second, 1 vs 2 bpy worker
processes, and the worker pool vs one fresh Blender process per file.

    python benchmarks/bench_assets.py [--characters 16] [--motions 8] [--baseline-files 4] [--repeats 2]

All figures come from one run on the same machine and the same files:
- characters: procedural characters written as GLB and FBX (half each), audited end to end
  (import, normalise, audit, signature, 96x144 Cycles thumbnail, normalised GLB export);
- motions: procedural clips keyed onto a character and exported as BVH, imported, retargeted and
  sampled every ``assets.frame_step`` frames;
- throughput is measured on a started pool (worker start-up, i.e. importing bpy, is reported apart);
- 1- and 2-worker passes are interleaved ``--repeats`` times and the best of each is kept (other load on
  the machine skews single passes; the 1-minute load average is printed);
- the baseline runs the same audit code in a fresh ``python`` per file (the script approach).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serialgen.config import load_settings  # noqa: E402
from serialgen.assets import worker as asset_worker  # noqa: E402


def build_files(folder: Path, n_characters: int, n_motions: int) -> tuple[list[str], list[str]]:
    """Character files (GLB/FBX) and BVH motion files, generated in a child process (keeps bpy out of this one)."""
    code = f"""
import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
from pathlib import Path
import bpy
from assets_data import build_motion_files
from serialgen.assets import procedural
from serialgen.blender_io import reset_scene
from serialgen.synthetic import procedural_motion
from serialgen.synthetic.character_spec import sample_spec
folder = Path({str(folder)!r})
for seed in range({n_characters}):
    if seed % 2:
        reset_scene(); procedural.build_character(sample_spec(seed))
        bpy.ops.export_scene.fbx(filepath=str(folder / f"c{{seed:03d}}.fbx"), path_mode="COPY", embed_textures=True,
                                 add_leaf_bones=False, bake_anim=False)
    else:
        procedural.generate_glb(seed, folder / f"c{{seed:03d}}.glb")
kinds = procedural_motion.KINDS
files = {{f"m{{i:03d}}.bvh": (kinds[i % len(kinds)], 100 + i) for i in range({n_motions})}}
build_motion_files(folder / "motions", files)
"""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    chars = sorted(str(p) for p in folder.iterdir() if p.suffix in (".glb", ".fbx"))
    motions = sorted(str(p) for p in (folder / "motions").glob("m*.bvh"))
    return chars, motions


def pooled(workers: int, chars: list[str], motions: list[str], settings) -> dict:
    cfg = settings.assets
    size = (cfg.thumbnail_width, cfg.thumbnail_height)
    with asset_worker.WorkerPool(workers) as pool:
        t0 = time.perf_counter()
        pool.start()
        t1 = time.perf_counter()
        audited = list(pool.map(asset_worker.audit_batch, chars, cfg.batch_size, size, cfg.thumbnail_samples))
        t2 = time.perf_counter()
        clips = list(pool.map(asset_worker.motion_batch, motions, cfg.batch_size, cfg.frame_step))
        t3 = time.perf_counter()
    assert all(f.error is None and f.thumbnail for _, f in audited), "every benchmark character must pass"
    n_poses = sum(len(c.frames) for _, result in clips for c in result)
    return {"workers": workers, "startup_s": round(t1 - t0, 2),
            "characters_per_s": round(len(chars) / (t2 - t1), 3), "poses_per_s": round(n_poses / (t3 - t2), 1),
            "poses": n_poses}


def process_per_file(chars: list[str]) -> float:
    """Characters per second when each file gets a fresh Python + bpy (same audit code)."""
    code = ("import sys; sys.path.insert(0, {root!r}); from serialgen.assets.audit import collect_facts; "
            "f = collect_facts(sys.argv[1]); assert f.error is None")
    start = time.perf_counter()
    for path in chars:
        subprocess.run([sys.executable, "-c", code.format(root=str(ROOT)), path], check=True, capture_output=True)
    return len(chars) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--characters", type=int, default=16)
    parser.add_argument("--motions", type=int, default=8)
    parser.add_argument("--baseline-files", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved 1/2-worker passes; the best of each counts")
    args = parser.parse_args()
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="bench-assets-") as tmp:
        chars, motions = build_files(Path(tmp), args.characters, args.motions)
        runs = [pooled(w, chars, motions, settings) for _ in range(args.repeats) for w in (1, 2)]  # interleaved
        one, two = (max((r for r in runs if r["workers"] == w), key=lambda r: r["characters_per_s"]) for w in (1, 2))
        best_poses = {w: max(r["poses_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
        one, two = {**one, "poses_per_s": best_poses[1]}, {**two, "poses_per_s": best_poses[2]}
        baseline = process_per_file(chars[: args.baseline_files])
    result = {
        "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "characters": len(chars), "motion_files": len(motions), "one_worker": one, "two_workers": two,
        "process_per_file_characters_per_s": round(baseline, 3),
        "ratio_characters_2v1": round(two["characters_per_s"] / one["characters_per_s"], 2),
        "ratio_poses_2v1": round(two["poses_per_s"] / one["poses_per_s"], 2),
        "ratio_pool_vs_process_per_file": round(one["characters_per_s"] / baseline, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
