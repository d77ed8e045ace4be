"""Where the pipeline's model folders live, and which version a model is.

One rule places every folder a stage trains into or builds models in: the directory the settings name,
else a folder under the lake when the lake is a local folder. Training writes plain files, so a lake on
object storage needs the directory configured; readers and writers resolve the folder through the same
function, so a configured directory is honoured by both.

A model's version follows its bytes, not the run that wrote it: a run that resumed a finished training
and exported the same weights again leaves the version unchanged, so nothing downstream reruns for it.
"""

from __future__ import annotations

import json
import hashlib
from pathlib import Path

from serialgen.config import ConfigError, Settings
from serialgen.dag import OFFLINE_PROFILES

#: The lake's folder for models trained or built into it.
CHECKPOINTS = "_checkpoints"


class NoModelFolder(ConfigError):
    """The lake is on object storage and the setting that names a model folder is not set."""


def lake_folder(settings: Settings, setting: str, *parts: str) -> Path:
    """``<lake>/<parts...>`` of a local lake; on object storage, a :class:`NoModelFolder` naming ``setting``."""
    lake = settings.open_lake()
    if not lake.is_local:
        raise NoModelFolder(f"lake {lake.uri} is not a local folder: set {setting}")
    return Path(lake.uri).resolve().joinpath(*parts)


def standardizer_dir(settings: Settings) -> Path:
    """``standardizer.checkpoint_dir`` (default ``<lake>/_checkpoints``) / ``standardizer.run_name``: the
    training folder (resumable ``checkpoint-*``, ``logs/``, the exported ``model/``)."""
    return _checkpoints_dir(settings, settings.standardizer.checkpoint_dir, "standardizer.checkpoint_dir") \
        / settings.standardizer.run_name


def preprocessors_dir(settings: Settings) -> Path:
    """``<standardizer.checkpoint_dir or <lake>/_checkpoints>/preprocessors``: the mask and pose models that
    ``train-preprocessors`` exports live beside the standardizer whose inputs they prepare."""
    return _checkpoints_dir(settings, settings.standardizer.checkpoint_dir, "standardizer.checkpoint_dir") \
        / "preprocessors"


#: The probes folder's format (``probes.json``); a folder in another format is retrained, never loaded.
PROBES_FORMAT = "serialgen-probes/3"  # 2: appearance classifiers; 3: view and action read from the figure


def probes_dir(settings: Settings) -> Path:
    """``probes.checkpoint_dir`` (default ``<lake>/_checkpoints/probes``): the evaluation probes of the offline
    profiles, written by ``train-probes`` and read by evaluate and the standardizer ablation."""
    configured = settings.probes.checkpoint_dir
    return Path(configured).expanduser() if configured is not None else \
        lake_folder(settings, "probes.checkpoint_dir", CHECKPOINTS, "probes")


def stale_probes(settings: Settings) -> str | None:
    """Why train-probes must rerun although nothing it reads changed: its folder is in an older format."""
    config = probes_dir(settings) / "probes.json"
    if not config.is_file():
        return None
    found = json.loads(config.read_text()).get("format")
    return None if found == PROBES_FORMAT else f"{config} is format {found!r}, this version reads {PROBES_FORMAT!r}"


def personalizer_dir(settings: Settings, mode: str | None = None) -> Path:
    """``personalizer.checkpoint_dir`` (default ``<lake>/_checkpoints/personalizer``) / ``<mode>``: one
    adapter's training folder and its export."""
    configured = settings.personalizer.checkpoint_dir
    base = (Path(configured).expanduser() if configured is not None
            else lake_folder(settings, "personalizer.checkpoint_dir", CHECKPOINTS, "personalizer"))
    return base / (mode or settings.personalizer.mode)


def base_model_dir(settings: Settings) -> Path:
    """``base_model.checkpoint_dir`` (default ``<lake>/_checkpoints/base``): the training folder of the base
    text-to-image model the offline profiles train (``train-base``), its export in ``model/``."""
    configured = settings.base_model.checkpoint_dir
    return Path(configured).expanduser() if configured is not None else \
        lake_folder(settings, "base_model.checkpoint_dir", CHECKPOINTS, "base")


def sdxl_folders(settings: Settings) -> tuple[Path | None, Path | None]:
    """The SDXL base and image-encoder folders: as configured, or in the offline profiles (when unset) the
    base model ``train-base`` exported (``<base_model_dir>/model/base`` and ``model/image_encoder``)."""
    cfg = settings.personalizer
    if settings.profile not in OFFLINE_PROFILES or (cfg.model_dir is not None and cfg.image_encoder_dir is not None):
        return cfg.model_dir, cfg.image_encoder_dir
    model = base_model_dir(settings) / "model"
    if not (model / "image_encoder" / "config.json").is_file() and (cfg.model_dir is None or cfg.image_encoder_dir is None):
        raise FileNotFoundError(f"no base text-to-image model in {model}: run `serialgen train-base` (the {settings.profile} "
                                "profile trains its own), or set personalizer.model_dir and personalizer.image_encoder_dir")
    return cfg.model_dir or model / "base", cfg.image_encoder_dir or model / "image_encoder"


def base_adapter_dir(settings: Settings) -> Path:
    """Where `train-base` exports the adapter it trained with the base (when ``base_model.image_path``)."""
    return base_model_dir(settings) / "model" / "ip_adapter"


def initial_adapter(settings: Settings) -> Path | None:
    """The exported adapter a personalizer starts from: ``personalizer.init_adapter``; unset, in the offline
    profiles on the pipeline's own base, the one `train-base` trained with it (if any); else None (from scratch)."""
    from serialgen.models.ip_adapter import WEIGHTS_NAME

    cfg = settings.personalizer
    if cfg.init_adapter is not None:
        path = Path(cfg.init_adapter).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"personalizer.init_adapter: no adapter file {path} (an exported "
                                    f"{WEIGHTS_NAME} in the stock IP-Adapter layout)")
        return path
    if settings.profile not in OFFLINE_PROFILES or cfg.model_dir is not None:
        return None
    path = base_adapter_dir(settings) / WEIGHTS_NAME
    return path if path.is_file() else None


def _checkpoints_dir(settings: Settings, configured: Path | None, setting: str) -> Path:
    return Path(configured).expanduser() if configured is not None else lake_folder(settings, setting, CHECKPOINTS)


def content_version(path: Path) -> str:
    """A version of a file, or of a folder's files, from their contents: sha256 over each file's path
    (relative to the folder, or its name) and bytes. Rewriting the same bytes keeps it; names, sizes and
    modification times alone never decide it."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    root = path.parent if path.is_file() else path
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
