"""The personalizer's commands: `train-personalizer` and `generate` through their Prefect flows, and
one-line errors for bad generation input (before Prefect starts)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from typer.testing import CliRunner

from personalizer_data import make_real_and_standardized
from serialgen.cli import app
from serialgen.storage.images import decode_image, encode_png


@pytest.mark.parametrize("case, message", [("unreadable", "cannot read reference image"),
                                           ("empty_prompts", "holds no prompts")])
def test_generate_bad_input_is_one_line(case, message, settings, lake, tmp_path):
    reference, prompts = tmp_path / "ref.png", tmp_path / "prompts.txt"
    reference.write_bytes(b"garbage" if case == "unreadable" else encode_png(np.zeros((8, 8, 3), np.uint8)))
    prompts.write_text("\n# nothing\n")
    args = ["--lake", settings.lake, "generate", "--reference", str(reference), "--no-standardize"]
    args += ["--prompts", str(prompts)] if case == "empty_prompts" else ["--prompt", "a character"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert lake.count("generations") == 0 and lake.count("runs") == 0


@pytest.mark.slow
def test_train_then_generate_through_the_flows(settings, lake, tmp_path, prefect_harness, tiny_sdxl):
    from prefect.client.orchestration import get_client

    make_real_and_standardized(lake, train=2, test=1)
    config = tmp_path / "fast.yaml"
    config.write_text(f"personalizer: {{inference_steps: 4, eval_pairs: 1, batch_size: 2, model_dir: '{tiny_sdxl[0]}', "
                      f"image_encoder_dir: '{tiny_sdxl[1]}'}}\n")
    runner = CliRunner()
    base = ["--lake", settings.lake, "--config", str(config)]
    trained = runner.invoke(app, [*base, "train-personalizer", "--steps", "3"])
    assert trained.exit_code == 0, trained.output
    assert "two_stage: trained to step 3" in trained.output
    reference = tmp_path / "ref.png"
    reference.write_bytes(lake.read("real_images").column("image")[0].as_py())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("action\trunning\nbackground\tin the city\n")
    out = tmp_path / "out"
    generated = runner.invoke(app, [*base, "generate", "--reference", str(reference), "--prompt",
                                    "smiling", "--prompts", str(prompts), "--no-standardize", "--out", str(out)])
    assert generated.exit_code == 0, generated.output
    rows = lake.read("generations").to_pylist()
    assert len(rows) == 3 and {r["prompt_category"] for r in rows} == {"other", "action", "background"}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{r['generation_id']}.png" for r in rows)
    assert decode_image((out / f"{rows[0]['generation_id']}.png").read_bytes()).shape == (96, 64, 3)

    async def artifact_keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    assert {"personalizer-metrics", "generation-grid"} <= asyncio.run(artifact_keys())
    stages = {r["stage"]: r for r in lake.read("runs").to_pylist()}
    assert stages["train-personalizer"]["status"] == "completed" and stages["generate"]["status"] == "completed"
