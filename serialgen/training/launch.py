"""What the training stages share as programs of their own (``accelerate launch -m ...``, one process per GPU,
and the flows' parameters): the common options, and settings with per-run values applied."""

from __future__ import annotations

import argparse
from typing import Any

from serialgen.config import Settings, load_settings


def launch_parser(description: str) -> argparse.ArgumentParser:
    """The options every training entry point takes: where (lake, profile, config file), whether to resume, how long."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lake")
    parser.add_argument("--profile")
    parser.add_argument("--config")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of continuing")
    parser.add_argument("--steps", type=int)
    return parser


def launch_settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, args.profile, lake=args.lake)


def with_values(settings: Settings, section: str, **values: Any) -> Settings:
    """``settings`` with the values that are not None set in ``section`` (a run's command-line overrides)."""
    update = {key: value for key, value in values.items() if value is not None}
    if not update:
        return settings
    return settings.model_copy(update={section: getattr(settings, section).model_copy(update=update)})
