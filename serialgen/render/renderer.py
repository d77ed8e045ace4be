"""Render engine settings and the render call itself (timed, so overhead around it can be measured).

Cycles on CPU works everywhere; Cycles on GPU and EEVEE need a GPU (EEVEE also a GL context).
The frame is written as an 8-bit RGBA raw Targa (no compression or filtering to pay for on either side,
to a RAM-backed folder where one exists) and read back: Blender exposes no pixels of the Render Result
to Python. The 8-bit pixels are the ones Blender would write to a PNG.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bpy
import numpy as np
from PIL import Image

from serialgen.config import RenderSettings
from serialgen.render.devices import NVIDIA_BACKENDS, CyclesDevice, assigned_devices


class RenderEngineError(RuntimeError):
    """The configured engine or device is not available on this machine."""


def _enable_gpus(gpu_ids: Sequence[str]) -> None:
    """Enable exactly the Cycles devices of Ray's ``gpu_ids`` (:func:`serialgen.render.devices.assigned_devices`)."""
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in NVIDIA_BACKENDS:
        try:
            prefs.compute_device_type = backend
        except TypeError:   # a backend this build lacks
            continue
        prefs.refresh_devices()
        listed = [CyclesDevice(d.type, d.id) for d in prefs.devices]
        chosen = {d.id for d in assigned_devices(gpu_ids, listed, backend, os.environ.get("CUDA_VISIBLE_DEVICES"))}
        if chosen:
            for device in prefs.devices:
                device.use = device.type == backend and device.id in chosen
            return
    raise RenderEngineError("render.device is GPU but Cycles finds no GPU (tried " + ", ".join(NVIDIA_BACKENDS) + ")")


def configure(settings: RenderSettings, width: int, height: int, gpu_ids: Sequence[str] = ()) -> None:
    """Apply engine, sampling, threads, colour and output settings to the current scene.

    ``gpu_ids``: the GPUs Ray assigned to this process (``device: GPU`` renders on those only).
    """
    scene = bpy.context.scene
    render = scene.render
    render.engine = settings.engine
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.film_transparent = True
    render.threads_mode = "FIXED"
    render.threads = settings.threads_per_worker
    render.use_persistent_data = True
    render.image_settings.file_format = "TARGA_RAW"
    render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    if settings.engine == "CYCLES":
        cycles = scene.cycles
        cycles.samples = settings.samples
        cycles.use_adaptive_sampling = settings.adaptive_threshold > 0
        cycles.adaptive_threshold = settings.adaptive_threshold
        cycles.use_denoising = settings.denoise
        cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.denoising_quality = settings.denoise_quality
        cycles.denoising_prefilter = settings.denoise_prefilter
        cycles.max_bounces = settings.max_bounces
        cycles.device = settings.device
        if settings.device == "GPU":
            _enable_gpus(gpu_ids)
    elif settings.engine == "BLENDER_EEVEE":
        scene.eevee.taa_render_samples = settings.samples


def _scratch_file() -> Path:
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() else Path(tempfile.gettempdir())) / f"serialgen-render-{os.getpid()}.tga"


class Renderer:
    """Renders the current scene to an RGBA array; ``seconds`` is the time inside the render call."""

    def __init__(self) -> None:
        self.path = _scratch_file()

    def render(self, seed: int) -> tuple[np.ndarray, float]:
        scene = bpy.context.scene
        if scene.render.engine == "CYCLES":
            scene.cycles.seed = seed % (2 ** 31)
        scene.render.filepath = str(self.path)
        start = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        seconds = time.perf_counter() - start
        try:
            with Image.open(self.path, formats=("TGA",)) as img:
                rgba = np.asarray(img.convert("RGBA"))
        finally:
            self.path.unlink(missing_ok=True)
        return rgba, seconds
