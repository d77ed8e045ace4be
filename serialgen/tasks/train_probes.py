"""Prefect task of the probe training: run it and publish the held-out validation table."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from serialgen.config import Settings
from serialgen.stages.train_probes import TrainProbesReport, run_train_probes
from serialgen.synthetic.vocabulary import PROBED


@task(name="train-probes", cache_policy=NO_CACHE)
def train_probes_task(settings: Settings) -> TrainProbesReport:
    report = run_train_probes(settings, flow_run_id=flow_run.id)
    m = report.metrics
    rows = [{"measure": f"identity retrieval vs standard views, {framing} (top-1 / top-5)",
             "probe": f"{m[f'vs_standard_{framing}_top1']:.3f} / {m[f'vs_standard_{framing}_top5']:.3f}",
             "baseline": f"pixels {m[f'vs_standard_{framing}_pixels_top1']:.3f} / "
                         f"{m[f'vs_standard_{framing}_pixels_top5']:.3f}"}
            for framing in ("all", *PROBED["framing"]) if f"vs_standard_{framing}_top1" in m]
    rows += [{"measure": f"{name} accuracy", "probe": f"{m[f'{name}_accuracy']:.3f}",
              "baseline": f"majority class {m[f'{name}_majority']:.3f}"}
             for name in PROBED if f"{name}_accuracy" in m]
    create_table_artifact(key="probes-validation", table=rows, description=(
        f"train-probes run {report.run_id}: {report.test_images} images of held-out characters"))
    return report
