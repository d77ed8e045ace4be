"""GPU check: batched standardization at the sd15 size (512x768) with random SD-1.5-sized weights (no download).

    python benchmarks/gpu_standardize.py [--batches 1,4,8] [--steps 20]    # ~3 min on one H100/H200
    python benchmarks/gpu_standardize.py --tiny                            # CPU smoke of the same code

Runs what each standardize actor runs per batch after preprocessing: ``StandardizationPipeline`` on
arrays (pad-to-frame, ReferenceNet once, DDIM ``--steps`` with guidance 3.5, one seed per image) in
fp16, and prints per batch size the images/s and the peak GPU memory. The mask and pose ONNX models
are not included (they run beside it on onnxruntime).
"""

from __future__ import annotations

import argparse
import time

from gpu_common import add_tiny_flag, device_and_size


def main() -> None:
    import numpy as np
    import torch

    from serialgen.models import Standardizer, random_sd15_components, tiny_components
    from serialgen.pipelines import StandardizationPipeline
    from serialgen.standard_skeleton import canonical_skeleton

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--steps", type=int, default=20)
    add_tiny_flag(parser)
    args = parser.parse_args()
    device, (height, width) = device_and_size(args.tiny)
    cuda = device.type == "cuda"
    with torch.device(device):
        model = Standardizer.from_components(tiny_components() if args.tiny else random_sd15_components())
    model.set_standard_skeleton(canonical_skeleton(width, height), width, height)
    if cuda:
        model.to(torch.float16)
        model.vae.to(torch.float32)  # the SD VAE overflows in float16
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    pipeline = StandardizationPipeline(model, device)
    rng = np.random.default_rng(0)
    source = (rng.uniform(0, 255, (900, 600, 3))).astype(np.uint8)          # a photo-sized 2:3 input
    mask = np.where(rng.uniform(size=(900, 600)) > 0.5, 255, 0).astype(np.uint8)
    pose = np.zeros((height, width, 3), np.uint8)
    pipeline([source], [mask], [pose], num_inference_steps=2, seed=[0])      # warm-up
    for batch in (int(b) for b in args.batches.split(",")):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        pipeline([source] * batch, [mask] * batch, [pose] * batch, num_inference_steps=args.steps,
                 guidance_scale=3.5, seed=list(range(batch)))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(f"batch {batch:2d}: {batch / seconds:6.2f} images/s ({seconds:6.2f} s per batch), "
              f"peak {peak:6.1f} GiB, DDIM {args.steps} + guidance, {height}x{width}", flush=True)


if __name__ == "__main__":
    main()
