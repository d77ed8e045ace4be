"""The command line: `info` on a lake with tables, and one-line errors for bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from serialgen.cli import app
from serialgen.storage.images import encode_png


def test_info_lists_config_packages_gpu_and_tables(lake, settings):
    img = encode_png(np.zeros((2, 2, 3), np.uint8))
    lake.upsert("backgrounds", [{"background_id": f"b{i}", "source_uri": "x", "image": img, "width": 2, "height": 2}
                                for i in range(3)], "r1")
    lake.upsert("backgrounds", [{"background_id": "b9", "source_uri": "x", "image": img, "width": 2, "height": 2}], "r2")
    result = CliRunner().invoke(app, ["--lake", settings.lake, "info"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "profile: tiny" in result.output
    assert "bpy" in result.output and "5.0.1" in result.output
    assert "gpu" in result.output
    version = settings.open_lake().version("backgrounds")
    assert re.search(rf"^\W*backgrounds\W+4\W+{version}\W*$", result.output, re.M), result.output  # 4 rows


@pytest.mark.parametrize("args, message", [
    (["--profile", "huge", "info"], "unknown profile 'huge'"),
    (["--config", "/nonexistent/serialgen.yaml", "info"], "cannot read config file"),
    (["--lake", "ftp://host/lake", "info"], "invalid lake URI"),
])
def test_bad_input_is_one_line_and_nonzero_exit(args, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERIALGEN_")}
    proc = subprocess.run([sys.executable, "-m", "serialgen.cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unreadable_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("render: {samples: [1,\n")
    result = CliRunner().invoke(app, ["--config", str(cfg), "info"])
    assert result.exit_code == 2 and "not valid YAML" in result.output


@pytest.mark.slow
def test_user_error_inside_a_flow_is_one_line_without_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERIALGEN_")}
    proc = subprocess.run([sys.executable, "-m", "serialgen.cli", "--lake", str(tmp_path / "empty"), "render"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "error: render: no `characters` rows with status = 'accepted' in lake" in proc.stderr
