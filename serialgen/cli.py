"""The ``serialgen`` command: global options, ``info``, and one subcommand per stage.

User errors (bad profile, config file, lake URI, missing weights) print one line and exit 2.
"""

from __future__ import annotations

import functools
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from serialgen.config import ConfigError, Settings, load_settings
from serialgen.storage import LakeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SerialGen pipeline: assets -> render -> composite -> standardizer -> ... ")
console = Console()
err_console = Console(stderr=True)

#: Errors a user can fix; they get one line, not a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, LakeError, FileNotFoundError)

PACKAGES = ("serialgen", "bpy", "torch", "diffusers", "transformers", "ray", "pylance", "lance-ray",
            "pyarrow", "prefect", "rembg", "open_clip_torch", "controlnet_aux", "numpy")


def fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_command(func: Callable) -> Callable:
    """Turn the user-fixable errors of a command into one clear line and exit code 2."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
    return wrapper


@app.callback()
def main(
    ctx: typer.Context,
    lake: Optional[str] = typer.Option(None, help="Lake URI (folder or s3://...); env SERIALGEN_LAKE."),
    profile: Optional[str] = typer.Option(None, help="tiny | sd15 | sdxl; env SERIALGEN_PROFILE."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings file."),
) -> None:
    try:
        ctx.obj = load_settings(config_file=config, profile=profile, lake=lake)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
@user_command
def info(ctx: typer.Context) -> None:
    """Print the resolved config, package versions, GPU visibility and the lake's tables."""
    settings: Settings = ctx.obj
    console.rule("config")
    console.print(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False).rstrip(), highlight=False)
    console.rule("packages")
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        console.print(f"{name:16} {version}", highlight=False)
    console.print(f"{'python':16} {sys.version.split()[0]}", highlight=False)
    console.print(f"{'gpu':16} {_gpu_description()}", highlight=False)
    console.rule(f"lake {settings.lake}")
    tables = settings.open_lake().tables()
    if not tables:
        console.print("(no tables yet)")
        return
    grid = Table("table", "rows", "version")
    for name, (rows, version) in tables.items():
        grid.add_row(name, str(rows), str(version))
    console.print(grid)


def _gpu_description() -> str:
    import torch

    if not torch.cuda.is_available():
        return "none visible (CPU only)"
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


if __name__ == "__main__":
    app()
