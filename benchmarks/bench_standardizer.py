"""Standardizer training on CPU: the data loader's share of step time, real Lance loader vs in-memory tensors.

    python benchmarks/bench_standardizer.py [--pairs 96] [--steps 48] [--threads 1] [--repeats 2]

Writes ``--pairs`` drawn pairs at the tiny render size (128x192) into a temporary lake, then runs the real
training loop (``train_standardizer``, tiny model at 64x96, batch 2) three ways: on pre-decoded in-memory
tensors (baseline), on ``PairsDataset`` in the main process, and with one spawned loader worker. The loop
itself measures the time spent waiting for batches; steady state excludes the first batch (worker
start-up, reported apart, paid once per run); the ratio column is each run's seconds per step over the
in-memory run's (best of ``--repeats`` interleaved runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from serialgen.compositing.backgrounds import procedural_background
from serialgen.config import load_settings
from serialgen.storage.images import encode_mask, encode_png
from serialgen.storage.torch_reader import PairsDataset

STORED = (192, 128)  # (H, W) of the tiny profile's renders and pairs


def write_pairs(lake, n: int, size: tuple[int, int] = STORED) -> None:
    """``n`` train pairs of a drawn figure on procedural backgrounds, stored at ``size`` (H, W)."""
    height, width = size
    rows, standards, white = [], {}, np.full((height, width, 3), 255, np.uint8)
    keypoints = np.zeros((18, 3), np.float32).tolist()
    rng = np.random.default_rng(0)
    colours = [tuple(int(c) for c in rng.integers(0, 255, 3)) for _ in range(8)]
    for i in range(n):
        character, colour = f"c{i % 8}", colours[i % 8]
        dx, dy = (int(v) for v in rng.integers(-20, 20, 2))
        image, mask, pose = _figure(procedural_background(0, i, width, height), colour, dx, dy)
        if character not in standards:
            target, target_mask, target_pose = _figure(white, colour, 0, 0)
            standards[character] = {"character_id": character, "image": encode_png(target),
                                    "mask": encode_mask(target_mask), "keypoints": keypoints,
                                    "pose_image": encode_png(target_pose), "width": width, "height": height}
        rows.append({"pair_id": f"p{i:05d}", "character_id": character, "pose_id": "p", "view_id": 0,
                     "background_id": "b", "split": "train", "input_image": encode_png(image),
                     "background_mask": encode_mask(mask), "reference_keypoints": keypoints,
                     "reference_pose_image": encode_png(pose), "augmentation": "{}",
                     "true_background_mask": encode_mask(mask), "true_reference_keypoints": keypoints})
    lake.upsert("standards", list(standards.values()), "bench")
    lake.upsert("pairs", rows, "bench")


def _figure(background: np.ndarray, colour, dx: int, dy: int):
    """Head + body (in a 128-wide frame, scaled to the canvas) and a two-stroke pose drawing."""
    height, width = background.shape[:2]
    k = width / 128
    at = lambda *xy: tuple(round(k * v) for v in xy)  # noqa: E731
    image, mask = Image.fromarray(background), Image.new("L", (width, height), 255)
    pose = Image.new("RGB", (width, height))
    for canvas, fill in ((ImageDraw.Draw(image), colour), (ImageDraw.Draw(mask), 0)):
        canvas.ellipse(at(48 + dx, 20 + dy, 80 + dx, 52 + dy), fill=fill)
        canvas.rectangle(at(36 + dx, 52 + dy, 92 + dx, 170 + dy), fill=fill)
    draw = ImageDraw.Draw(pose)
    draw.line(at(64 + dx, 36 + dy, 64 + dx, 170 + dy), fill=(255, 0, 0), width=round(4 * k))
    draw.line(at(36 + dx, 60 + dy, 92 + dx, 60 + dy), fill=(0, 255, 0), width=round(4 * k))
    return np.asarray(image), np.asarray(mask), np.asarray(pose)


class InMemory(torch.utils.data.Dataset):
    """The same items, decoded once up front: the loader-free baseline."""

    def __init__(self, dataset) -> None:
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def main() -> None:
    # Imported here: spawned loader workers re-import this module and need none of it.
    from serialgen.models import Standardizer, tiny_components
    from serialgen.training.standardizer import train_standardizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: robust on a busy box)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-standardizer-"))
    settings = load_settings(lake=str(root / "lake"))
    lake = settings.open_lake()
    started = time.perf_counter()
    write_pairs(lake, args.pairs)
    print(f"wrote {args.pairs} pairs ({STORED[1]}x{STORED[0]}) in {time.perf_counter() - started:.1f} s")
    cfg = settings.standardizer.model_copy(update={"steps": args.steps, "checkpoint_every": 10**9,
                                                   "validation_pairs": 0})
    size = (cfg.height, cfg.width)
    lance = PairsDataset(lake, "train", size=size)
    started = time.perf_counter()
    memory = InMemory(lance)
    decode = (time.perf_counter() - started) / len(memory)
    print(f"PairsDataset alone: {1000 * decode:.1f} ms per item (take + 5 PNG decodes + resize to {size[1]}x{size[0]})")
    runs = {"in-memory tensors": (memory, 0), "Lance PairsDataset, 0 workers": (lance, 0),
            "Lance PairsDataset, 1 spawned worker": (lance, 1)}
    best: dict[str, tuple[float, float, float]] = {}
    for repeat in range(args.repeats):
        for name, (data, workers) in runs.items():
            run_cfg = cfg.model_copy(update={"num_workers": workers})
            model = Standardizer.from_components(tiny_components(seed=0))
            out = root / f"run-{repeat}-{len(best)}-{workers}-{id(data)}"
            result = train_standardizer(model, data, run_cfg, out, resume=False)
            per_step = (sum(result.data_times) + sum(result.step_times[1:])) / (result.step - 1)  # after batch 1
            if name not in best or per_step < best[name][0]:
                best[name] = (per_step, result.data_share, result.loader_start_seconds)
    baseline = best["in-memory tensors"][0]
    print(f"\n{args.steps} steps, batch {cfg.batch_size}, tiny model at {size[1]}x{size[0]}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'loader':40} {'s/step':>8} {'data share':>11} {'vs in-memory':>13} {'first batch s':>14}")
    for name, (per_step, share, start) in best.items():
        print(f"{name:40} {per_step:8.4f} {100 * share:10.1f}% {per_step / baseline:12.3f}x {start:14.2f}")


if __name__ == "__main__":
    main()
