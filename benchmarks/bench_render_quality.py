"""Render quality against cost: PSNR/SSIM against a high-sample reference and seconds per image, 512x768, 1 thread.

    python benchmarks/bench_render_quality.py [--characters 3] [--framings full bust head] [--samples 2 4 8 16 32 64]
        [--reference-samples 512] [--extras-at 8 ...] [--only TEXT ...] [--add] [--figure VARIANT]

One scene per procedural character, the framings taken in turn (character i gets framing i mod the number of
framings), each with its own random pose, expression, lights and viewpoint. It is posed by the
render worker's own code (``RenderWorker.stage_item``) and rendered at every setting; before each render
the item is staged again, so every render pays the geometry update a new pose costs in the stage.
- reference: Cycles, ``--reference-samples`` samples, no adaptive sampling, OpenImageDenoise, another seed
  (the same seed would share its first samples with every test render and flatter them);
- variants: samples x denoiser on/off at adaptive threshold 0.05 (the stage's default); at each
  ``--extras-at`` sample count with denoising: 2 and 1 light bounces (default 12), OIDN quality BALANCED /
  FAST (default HIGH), guide prefilter FAST / NONE (default ACCURATE), and FAST with prefilter FAST; at
  32 samples with denoising, adaptive threshold off / 0.01 / 0.1; the Workbench engine; EEVEE 16 samples
  (its error is recorded where it cannot run). ``--only`` keeps the variants whose name contains a text;
  ``--add`` adds them to the stored run's table (the same scenes: the reference renders the same again).
Pixels compared: the 8-bit RGBA render composited over mid-grey (0.5), as float in [0, 1], whole frame and
the figure's box (the reference's alpha > 0, padded 8 px), PSNR and SSIM by ``serialgen.training.metrics``.
Mask IoU (alpha > 127, as the stage writes it) is reported beside them as a check; keypoints are projected
from the scene, not from pixels, so they do not depend on the settings.
Time: wall seconds inside the render call (as the stage records ``render_seconds``) and the process's
CPU seconds over it (core-seconds: what a cluster budget pays, robust to a shared machine).

Writes benchmarks/out/render_quality.{json,md} and the composites of the first scene under
benchmarks/out/render_quality/; ``--figure VARIANT`` then draws docs/render_quality.png from them
(reference | VARIANT | 64 samples with denoising, PSNR under each) without rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from render_data import character_glbs, pose_rows  # noqa: E402

from serialgen.config import RenderSettings  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
FIGURE = ROOT / "docs" / "render_quality.png"
GREY = 0.5
FRAMINGS = {"full": {}, "bust": {"bust_share": 1.0}, "head": {"head_share": 1.0}, "cutoff": {"cutoff_share": 1.0}}
BASE = RenderSettings(width=512, height=768, threads_per_worker=1, bust_share=0.0, head_share=0.0, cutoff_share=0.0)
REFERENCE = "reference"
#: Samples of the adaptive-threshold variants: Cycles' automatic minimum sample count grows with the samples,
#: so at a few samples there is nothing to adapt.
ADAPTIVE_AT = 32


def variants(samples: list[int], extras_at: list[int]) -> dict[str, dict[str, Any]]:
    """{name: RenderSettings overrides} of every setting measured against the reference."""
    out = {f"cycles {n} spp{' denoise' * dn}": {"samples": n, "denoise": dn}
           for dn in (True, False) for n in samples}
    for n in extras_at:
        at = {"samples": n, "denoise": True}
        out |= {f"cycles {n} spp denoise, {b} bounce{'s' * (b > 1)}": at | {"max_bounces": b} for b in (2, 1)}
        out |= {f"cycles {n} spp denoise {q.lower()}": at | {"denoise_quality": q} for q in ("BALANCED", "FAST")}
        out |= {f"cycles {n} spp denoise, prefilter {p.lower()}": at | {"denoise_prefilter": p} for p in ("FAST", "NONE")}
        out[f"cycles {n} spp denoise fast, prefilter fast"] = at | {"denoise_quality": "FAST", "denoise_prefilter": "FAST"}
    if extras_at:
        out |= {f"cycles {ADAPTIVE_AT} spp denoise, adaptive {t or 'off'}": {"samples": ADAPTIVE_AT, "denoise": True,
                                                                        "adaptive_threshold": t}
                for t in (0.0, 0.01, 0.1)}
        out |= {"workbench": {"engine": "BLENDER_WORKBENCH"},
                "eevee 16 spp": {"engine": "BLENDER_EEVEE", "samples": 16}}
    return out


def over_grey(rgba: np.ndarray) -> np.ndarray:
    """uint8 HxWx4 -> float HxWx3 in [0, 1], composited over mid-grey."""
    x = rgba.astype(np.float64) / 255.0
    return x[..., :3] * x[..., 3:] + GREY * (1.0 - x[..., 3:])


def figure_box(alpha: np.ndarray, pad: int = 8) -> tuple[slice, slice]:
    """The figure's box: PSNR over the whole frame depends on how much empty background the framing leaves."""
    ys, xs = np.nonzero(alpha > 0)
    h, w = alpha.shape
    return slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)), slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, w))


def compare(test: np.ndarray, reference: np.ndarray, box: tuple[slice, slice]) -> dict[str, float]:
    import torch

    from serialgen.training.metrics import mask_iou, psnr, ssim

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]

    a, b = over_grey(test), over_grey(reference)
    return {"psnr": float(psnr(t(a), t(b))[0]), "ssim": float(ssim(t(a), t(b))[0]),
            "psnr_box": float(psnr(t(a[box]), t(b[box]))[0]),
            "mask_iou": mask_iou(test[..., 3] > 127, reference[..., 3] > 127)}


def render_scene(worker, item, pose, overrides: dict[str, Any], seed: int) -> tuple[np.ndarray, float, float]:
    """Stage ``item`` again and render it at ``overrides`` -> (rgba, wall s, CPU s inside the render call)."""
    from serialgen.render.renderer import configure

    settings = worker.settings.model_copy(update=overrides)
    configure(settings, settings.width, settings.height)
    worker.stage_item(item, *pose)
    cpu = time.process_time()
    rgba, seconds = worker.renderer.render(seed)
    return rgba, seconds, time.process_time() - cpu


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from serialgen.render.actor import blender_sized_for
    from serialgen.synthetic.render_plan import RenderItem, stable_seed

    torch.set_num_threads(1)
    with blender_sized_for(1):
        from serialgen.render.worker import RenderWorker
    from PIL import Image

    grid = {name: o for name, o in variants(args.samples, args.extras_at).items()
            if not args.only or any(part in name for part in args.only)}
    glbs = character_glbs(list(range(1, args.characters + 1)))
    poses = pose_rows(len(glbs), seed=1)
    worker = RenderWorker(BASE)
    scenes, figure_dir = [], OUT / "render_quality"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for c, (cid, glb) in enumerate(sorted(glbs.items())):
        worker.load(cid, glb)
        framing = args.framings[c % len(args.framings)]
        row = poses[c]
        pose = (row["bones"], row["rotations"])
        item = RenderItem(cid, row["pose_id"], 0, stable_seed("render-quality", cid, row["pose_id"]))
        worker.settings = BASE.model_copy(update=FRAMINGS[framing])
        ref, ref_s, ref_cpu = render_scene(worker, item, pose, {"samples": args.reference_samples,
                                                                "denoise": True, "adaptive_threshold": 0.0},
                                           item.seed + 1)
        box = figure_box(ref[..., 3])
        scene = {"character": cid, "framing": framing, "pose": row["pose_id"],
                 "figure_share": float((ref[..., 3] > 127).mean()),
                 "results": {REFERENCE: {"seconds": ref_s, "cpu_seconds": ref_cpu}}}
        first = not scenes
        if first:
            Image.fromarray(ref).save(figure_dir / f"{REFERENCE}.png")
        for name, overrides in grid.items():
            try:
                rgba, seconds, cpu = render_scene(worker, item, pose, overrides, item.seed)
            except Exception as exc:  # noqa: BLE001 - an engine this build cannot run is a result
                scene["results"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            scene["results"][name] = {"seconds": seconds, "cpu_seconds": cpu, **compare(rgba, ref, box)}
            if first:
                Image.fromarray(rgba).save(figure_dir / f"{name}.png")
            print(f"{cid} {framing:6s} {name:42s} {scene['results'][name]['psnr']:6.2f} dB "
                  f"{cpu:6.2f} CPU s", flush=True)
        scenes.append(scene)
    return {"width": BASE.width, "height": BASE.height, "threads": 1, "reference_samples": args.reference_samples,
            "background": f"mid-grey {GREY}", "scenes": scenes, "summary": summarize(scenes)}


def summarize(scenes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per setting over all scenes: mean and min PSNR, mean SSIM / box PSNR / mask IoU, mean seconds."""
    out = {}
    for name in scenes[0]["results"]:
        rows = [s["results"][name] for s in scenes if name in s["results"]]
        if any("error" in r for r in rows):
            out[name] = {"error": next(r["error"] for r in rows if "error" in r)}
            continue
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        if "psnr" in rows[0]:
            out[name]["psnr_min"] = float(min(r["psnr"] for r in rows))
            out[name]["psnr_box_min"] = float(min(r["psnr_box"] for r in rows))
    return out


def markdown(result: dict[str, Any]) -> str:
    summary = result["summary"]
    ref_cpu = summary[REFERENCE]["cpu_seconds"]
    lines = [f"{len(result['scenes'])} scenes at {result['width']}x{result['height']}, 1 thread; reference "
             f"{result['reference_samples']} spp, denoised, {ref_cpu:.1f} CPU s; composited over "
             f"{result['background']}.", "",
             "| setting | PSNR dB (min) | figure-box PSNR dB (min) | SSIM | mask IoU | CPU s / image | wall s / image |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in summary.items():
        if name == REFERENCE:
            continue
        if "error" in r:
            lines.append(f"| {name} | not run: {r['error']} | | | | | |")
            continue
        lines.append(f"| {name} | {r['psnr']:.2f} ({r['psnr_min']:.2f}) | {r['psnr_box']:.2f} ({r['psnr_box_min']:.2f}) "
                     f"| {r['ssim']:.4f} | {r['mask_iou']:.4f} | {r['cpu_seconds']:.2f} | {r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def draw_figure(chosen: str, result: dict[str, Any]) -> None:
    """Reference | ``chosen`` | 64 spp denoised, of the first scene, with PSNR and CPU seconds under each."""
    from PIL import Image, ImageDraw

    scene = result["scenes"][0]
    panels = [(REFERENCE, f"reference {result['reference_samples']} spp denoised"),
              (chosen, chosen), ("cycles 64 spp denoise", "cycles 64 spp denoise")]
    images = [Image.open(OUT / "render_quality" / f"{name}.png").convert("RGBA") for name, _ in panels]
    w, h = images[0].size
    sheet = Image.new("RGB", (3 * w + 8, h + 40), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, ((name, label), img) in enumerate(zip(panels, images)):
        grey = Image.new("RGBA", img.size, (128, 128, 128, 255))
        sheet.paste(Image.alpha_composite(grey, img).convert("RGB"), (i * (w + 4), 0))
        r = scene["results"][name]
        quality = "PSNR: the reference" if name == REFERENCE else f"PSNR {r['psnr']:.1f} dB, SSIM {r['ssim']:.4f}"
        draw.text((i * (w + 4) + 4, h + 4), label, fill=(0, 0, 0))
        draw.text((i * (w + 4) + 4, h + 20), f"{quality}; {r['cpu_seconds']:.1f} CPU s", fill=(0, 0, 0))
    sheet.save(FIGURE)
    print(f"wrote {FIGURE}")


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the variants of ``new`` (a run on the same scenes and reference) added, summary redone."""
    key = [(s["character"], s["framing"], s["pose"]) for s in old["scenes"]]
    if key != [(s["character"], s["framing"], s["pose"]) for s in new["scenes"]] \
            or old["reference_samples"] != new["reference_samples"]:
        raise SystemExit("--add needs the scenes and reference of the stored run")
    for before, after in zip(old["scenes"], new["scenes"]):
        before["results"] |= {k: v for k, v in after["results"].items() if k != REFERENCE}
    return old | {"summary": summarize(old["scenes"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--characters", type=int, default=3)
    parser.add_argument("--framings", nargs="+", choices=sorted(FRAMINGS), default=["full", "bust", "head"])
    parser.add_argument("--samples", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--reference-samples", type=int, default=512)
    parser.add_argument("--extras-at", type=int, nargs="*", default=[8],
                        help="samples of the bounce/denoiser variants (none: no extras, no engines)")
    parser.add_argument("--only", nargs="+", metavar="TEXT", help="only the variants whose name contains a TEXT")
    parser.add_argument("--add", action="store_true", help="add to the stored run's table (same scenes)")
    parser.add_argument("--figure", metavar="VARIANT", help="draw docs/render_quality.png from the stored run")
    args = parser.parse_args()
    stored = OUT / "render_quality.json"
    if args.figure:
        return draw_figure(args.figure, json.loads(stored.read_text()))
    result = measure(args)
    if args.add:
        result = merged(json.loads(stored.read_text()), result)
    OUT.mkdir(exist_ok=True)
    stored.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (OUT / "render_quality.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
