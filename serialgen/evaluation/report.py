"""The evaluation report: the paper's Tables 1, 2, 3, 4 and 7 with its published numbers beside ours,
image grids, and a blind side-by-side sheet for the user study (Table 5), as HTML (self-contained) and
Markdown. Tables are plain data (:class:`ReportTable`) so the Prefect task publishes the same ones.
"""

from __future__ import annotations

import base64
import html
import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serialgen.evaluation.scoring import ALL
from serialgen.evaluation.testset import CATEGORIES, TestSet
from serialgen.imaging import fit_square, grid
from serialgen.storage.images import decode_image, encode_png

#: Row labels of the personalizer modes, as the paper names them.
METHOD_NAMES = {"two_stage": "SerialGen two-stage (ours)", "paired_one_stage": "Paired one-stage",
                "unpaired": "Unpaired one-stage"}
#: Published numbers quoted in the paper's text (section 4.3, supplement section 12); None: not given.
PAPER_TABLE2 = {
    "unpaired": {"clip_i": 89.62, "face_sim": 0.52, "clip_t": 16.08, "ap_clip_i": None},
    "paired_one_stage": {"clip_i": None, "face_sim": None, "clip_t": "21.99 / 21.76", "ap_clip_i": 77.74},
    "two_stage": {"clip_i": None, "face_sim": None, "clip_t": "21.99 / 21.76", "ap_clip_i": 83.17},
}
PAPER_TABLE7 = {"standardized": {"clip_i": 89.47, "face_sim": 0.69}, "personalized": {"clip_i": 85.49, "face_sim": 0.53}}
USER_STUDY_QUESTIONS = (
    ("WAC", "Which image best preserves the reference character's whole-body appearance?"),
    ("TC", "Which image best matches the text prompt?"),
    ("VA", "Which image is the most visually appealing?"),
)


@dataclass
class ReportTable:
    key: str                       # Prefect artifact key
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    grids: dict[str, Path]         # method -> PNG grid
    user_study: Path | None
    user_study_key: Path | None


def build_tables(stored: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], evaluator: Any,
                 standardizers: Sequence[Any]) -> dict[str, ReportTable]:
    """The paper's tables from `evaluations` rows: this run's (``current``) and, for Table 4, every stored
    two-stage result on the same test set (one per standardizer version evaluated so far).

    Columns follow the evaluator (``evaluator.columns``: CLIP-T / CLIP-I / Face Sim, or the probes' prompt
    accuracy / ID-Sim / ID top-1); each table's note names the model behind each column."""
    label = evaluator.note
    clip = evaluator.identity_metric == "clip_i"
    metrics = list(evaluator.columns)
    identity = [(m, h) for m, h in metrics if m != metrics[0][0]]
    agg = _aggregates(current)
    methods = sorted({k[0] for k in agg if k[1] == "personalized"}, key=_method_order)
    tables = {}

    def cell(method: str, stage: str, metric: str, domain: str = ALL, category: str = ALL) -> Any:
        row = agg.get((method, stage, metric, domain, category))
        return None if row is None or row["value"] is None else round(row["value"], 2 if metric in
                                                                    ("clip_i", "clip_t", "ap_clip_i", "psnr") else 4)

    def faces(method: str, stage: str, domain: str = ALL, category: str = ALL) -> list[str]:
        if not clip:
            return []
        row = agg.get((method, stage, "face_sim", domain, category))
        if row is None:
            return ["—"]
        rate = json.loads(row["details"]).get("detection_rate")
        return [f"{row['n']} ({100 * rate:.0f}%)" if rate is not None else str(row["n"])]

    face_header = ["faces found (rate)"] if clip else []
    tables["table1"] = ReportTable(
        "table-1", "Table 1: comparison of methods",
        ["method", *(h for _, h in metrics), *face_header, "outputs"],
        [[_name(m), *(cell(m, "personalized", k) for k, _ in metrics), *faces(m, "personalized"),
          (agg.get((m, "personalized", evaluator.identity_metric, ALL, ALL)) or {}).get("n")] for m in methods],
        f"{label}. The paper's Table 1 compares against StoryMaker, IP-Adapter and FastComposer (not run here); "
        "its text gives no numbers for it.")
    subsets = [(d, ALL) for d in sorted({k[3] for k in agg if k[3] != ALL})] + \
              [(ALL, c) for c in CATEGORIES if any(k[4] == c for k in agg)]
    tables["table1_subsets"] = ReportTable(
        "table-1-subsets", "Table 1 by domain and prompt category",
        ["method", "domain", "prompt category", *(h for _, h in metrics), *face_header],
        [[_name(m), d, c, *(cell(m, "personalized", k, d, c) for k, _ in metrics), *faces(m, "personalized", d, c)]
         for m in methods for d, c in subsets if (m, "personalized", evaluator.identity_metric, d, c) in agg], label)
    ap_header = "AP-CLIP-I" if clip else "AP-ID-Sim"
    if clip:
        paper = {m: PAPER_TABLE2.get(m, {}) for m in methods}
        tables["table2"] = ReportTable(
            "table-2", "Table 2: one-stage vs two-stage, with AP-CLIP-I",
            ["method", "CLIP-I", "CLIP-I (paper)", "Face Sim", "Face Sim (paper)", "CLIP-T", "CLIP-T (paper)",
             "AP-CLIP-I", "AP-CLIP-I (paper)"],
            [[_name(m), cell(m, "personalized", "clip_i"), _paper(paper[m].get("clip_i")),
              cell(m, "personalized", "face_sim"), _paper(paper[m].get("face_sim")),
              cell(m, "personalized", "clip_t"), _paper(paper[m].get("clip_t")),
              cell(m, "personalized", "ap_clip_i"), _paper(paper[m].get("ap_clip_i"))] for m in methods],
            f"{label}. Paper numbers from its text: the two paired methods' CLIP-T are 21.99 and 21.76 (which is "
            "which is not stated); paired one-stage CLIP-I is 5.49 below two-stage.")
    else:
        tables["table2"] = ReportTable(
            "table-2", "Table 2: one-stage vs two-stage, with AP-ID-Sim",
            ["method", *(h for _, h in identity), ap_header, metrics[0][1]],
            [[_name(m), *(cell(m, "personalized", k) for k, _ in identity), cell(m, "personalized", "ap_id_sim"),
              cell(m, "personalized", metrics[0][0])] for m in methods],
            f"{label}. The paper (CLIP ViT-H/14): unpaired one-stage CLIP-I 89.62, CLIP-T 16.08; the paired methods' "
            "CLIP-T 21.99 / 21.76; AP-CLIP-I 83.17 (two-stage) vs 77.74 (paired one-stage). Our columns are the "
            "probes' stand-ins, not on CLIP's scale.")
    tables["table2_synthetic"] = _table2_synthetic(stored)
    tables["table3"] = _table3(agg, cell)
    tables["table4"] = _table4(stored, current, standardizers, metrics, label)
    rows7 = []
    if "two_stage" in methods:
        for stage, name in (("standardized", "after standardization"), ("personalized", "after personalization")):
            rows7.append([name, *(cell("two_stage", stage, k) for k, _ in identity)]
                         + ([PAPER_TABLE7[stage]["clip_i"], PAPER_TABLE7[stage]["face_sim"], *faces("two_stage", stage)]
                            if clip else []))
    tables["table7"] = ReportTable(
        "table-7", "Table 7: identity kept at each stage (two-stage)",
        ["stage", *(h for _, h in identity)]
        + (["CLIP-I (paper)", "Face Sim (paper)", "faces found (rate)"] if clip else []),
        rows7, f"{label}. Both against the original reference."
        + ("" if clip else " The paper (CLIP-I / Face Sim): 89.47 / 0.69 after standardization, 85.49 / 0.53 after "
                          "personalization."))
    return tables


#: Table 2 (synthetic) columns: metric -> header, as `ablate-personalizer` records them.
TABLE2_SYNTHETIC = {"id_sim": "ID-Sim", "ap_id_sim": "AP-ID-Sim", "id_top1": "ID top-1",
                    "prompt_acc": "prompt accuracy", "replication": "replication (SSIM to reference)"}


def _table2_synthetic(stored: Sequence[Mapping[str, Any]]) -> ReportTable:
    """The latest `ablate-personalizer` run's rows (stage personalized, methods ``table2 <row>``) with intervals."""
    rows = [r for r in stored if (r["method"] or "").startswith("table2 ") and r["generation_id"] is None]
    latest = max(rows, key=lambda r: r["written_at"])["run_id"] if rows else None
    chosen = [r for r in rows if r["run_id"] == latest]
    table: dict[str, dict[str, str]] = defaultdict(dict)
    labels: dict[str, str] = {}
    for r in chosen:
        details = json.loads(r["details"])
        name = r["method"].removeprefix("table2 ")
        labels[name] = details.get("label") or name
        table[name][r["metric"]] = f"{r['value']:.3f} ± {details['interval95']:.3f}"
    return ReportTable(
        "table-2-synthetic", "Table 2 in the synthetic world: training modes and controls on held-out characters",
        ["method", *TABLE2_SYNTHETIC.values()],
        [[labels[m], *(table[m].get(k, "—") for k in TABLE2_SYNTHETIC)] for m in table],
        f"`serialgen ablate-personalizer` run {latest}: identity probe (ID-Sim to the rendered standard view, AP-ID-Sim "
        "across prompts, top-1 among the scored characters), attribute probes (prompt accuracy), SSIM between output "
        "and the reference the adapter was given (replication); 95 % intervals over characters."
        if latest else "Not run yet: `serialgen ablate-personalizer` (offline profiles) fills it.")


def _table3(agg: Mapping[tuple[str, str, str, str, str], Mapping[str, Any]], cell: Any) -> ReportTable:
    """Standardizer variants, then the baselines scored on the same held-out pairs."""
    methods = {k[0] for k in agg if k[1] == "standardizer"}
    variants = sorted((m for m in methods if not m.startswith("baseline:")), key=lambda v: (-v.count("+"), v))
    baselines = sorted(m for m in methods if m.startswith("baseline:"))
    mark = lambda v, module: "" if v.startswith("baseline:") else ("✓" if module in v else "✗")  # noqa: E731
    return ReportTable(
        "table-3", "Table 3: standardizer ablation on held-out synthetic pairs",
        ["method", "FBDM", "RPIM", "PSNR (dB)", "SSIM", "pairs"],
        [[v, mark(v, "fbdm"), mark(v, "rpim"), cell(v, "standardizer", "psnr"), cell(v, "standardizer", "ssim"),
          (agg.get((v, "standardizer", "psnr", ALL, ALL)) or {}).get("n")] for v in variants + baselines],
        "PSNR/SSIM (torchmetrics, data range 1) of DDIM standardizations against the true standard view, on "
        "pairs of held-out characters (test split); baselines on the same pairs: the input resized, and the mean "
        "standard view of the training characters. The paper's text gives no numbers for Table 3.")


def _table4(stored: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], standardizers: Sequence[Any],
            metrics: Sequence[tuple[str, str]], label: str) -> ReportTable:
    """Two-stage results per standardizer version scored on this test set (Table 4: with vs without FBDM & RPIM)."""
    test_sets = {r["test_set"] for r in current if r["stage"] == "personalized"}
    by_version: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in stored:
        if (r["method"] == "two_stage" and r["stage"] == "personalized" and r["test_set"] in test_sets
                and r["generation_id"] is None and r["character_id"] is None
                and r["domain"] == ALL and r["prompt_category"] == ALL):
            by_version[r["standardizer_version"] or "none"][r["metric"]] = r["value"]

    def variant(version: str) -> str:
        folder = version.split("@")[0]  # standardizer versions read "<run folder>/<model folder>@<hash>"
        hits = [v.label for v in standardizers if v.run_id in version or str(v.folder).endswith(folder)]
        return hits[0] if hits else "?"

    return ReportTable(
        "table-4", "Table 4: two-stage generation by standardizer",
        ["standardizer version", "FBDM & RPIM", *(h for _, h in metrics)],
        [[version, variant(version), *(None if m.get(k) is None else round(m[k], 4) for k, _ in metrics)]
         for version, m in sorted(by_version.items())],
        f"{label}. One row per standardizer the two-stage model was evaluated with on this test set; retrain the "
        "standardizer without FBDM/RPIM and rerun evaluate to fill the comparison. The paper's text gives no numbers.")


def write_report(folder: Path, tables: Mapping[str, ReportTable], test_set: TestSet,
                 generations: Sequence[Mapping[str, Any]], cfg: Any) -> ReportFiles:
    """report.html (images inline), report.md (+ grid PNGs), user_study.html and its key, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    grids = {m: image_grid(test_set, rows) for m, rows in _by_method(generations).items()}
    grid_files = {}
    for method, picture in grids.items():
        grid_files[method] = folder / f"grid_{method}.png"
        grid_files[method].write_bytes(encode_png(picture))
    sheet, key = user_study_sheet(test_set, generations, cfg.user_study_items, cfg.seed)
    study, study_key = None, None
    if sheet is not None:
        study, study_key = folder / "user_study.html", folder / "user_study_key.json"
        study.write_text(sheet)
        study_key.write_text(json.dumps(key, indent=1))
    html_path, md_path = folder / "report.html", folder / "report.md"
    html_path.write_text(_html(tables, grids, test_set, study))
    md_path.write_text(_markdown(tables, grid_files, test_set, study))
    return ReportFiles(html_path, md_path, grid_files, study, study_key)


def image_grid(test_set: TestSet, rows: Sequence[Mapping[str, Any]], cell: int = 128) -> np.ndarray:
    """One row per character: reference | standardized reference | one output per prompt (lowest seed)."""
    by_character: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: r["seed"]):
        by_character[row["character_id"]].setdefault(row["prompt"], row)
    references = {c.character_id: c.image for c in test_set.characters}
    prompts = [p for p, _ in test_set.prompts]
    lines = []
    for character in sorted(by_character):
        outputs = by_character[character]
        first = next(iter(outputs.values()))
        standardized = first.get("standardized_reference")
        tiles = [references.get(character), decode_image(standardized, "RGB") if standardized else None]
        tiles += [decode_image(outputs[p]["image"], "RGB") if p in outputs else None for p in prompts]
        lines.append([fit_square(t, cell) for t in tiles])
    return grid(lines) if lines else fit_square(None, cell)


def user_study_sheet(test_set: TestSet, generations: Sequence[Mapping[str, Any]], items: int,
                     seed: int) -> tuple[str | None, dict[str, Any]]:
    """A blind side-by-side sheet (methods shuffled per item, named A, B, ...) and the key that unblinds it."""
    by_item: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in sorted(generations, key=lambda r: r["seed"]):
        by_item[(row["character_id"], row["prompt"])].setdefault(row["method"], row)
    candidates = sorted(k for k, v in by_item.items() if len(v) >= 2)
    if not candidates:
        return None, {}
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(items, len(candidates)))
    references = {c.character_id: c.image for c in test_set.characters}
    key, blocks = {"seed": seed, "items": []}, []
    for number, (character, prompt) in enumerate(chosen, 1):
        methods = sorted(by_item[(character, prompt)])
        rng.shuffle(methods)
        letters = [chr(ord("A") + i) for i in range(len(methods))]
        key["items"].append({"item": number, "character_id": character, "prompt": prompt,
                             "methods": dict(zip(letters, methods)),
                             "generation_ids": {l: by_item[(character, prompt)][m]["generation_id"]
                                                for l, m in zip(letters, methods)}})
        images = "".join(f"<figure><img src='{_data_uri(decode_image(by_item[(character, prompt)][m]['image'], 'RGB'))}'>"
                         f"<figcaption>{l}</figcaption></figure>" for l, m in zip(letters, methods))
        questions = "".join(f"<p><b>{code}</b> {html.escape(text)} "
                            + " ".join(f"<label><input type=radio name='q{number}{code}' value='{l}'>{l}</label>"
                                       for l in letters) + "</p>" for code, text in USER_STUDY_QUESTIONS)
        blocks.append(f"<section><h3>Item {number}</h3><p>Prompt: <i>{html.escape(prompt)}</i></p>"
                      f"<div class=row><figure><img src='{_data_uri(references[character])}'>"
                      f"<figcaption>reference</figcaption></figure>{images}</div>{questions}</section>")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>SerialGen user study</title><style>{_CSS}</style>"
            "</head><body><h1>User study (blind)</h1><p>For each item, answer the three questions. The methods are "
            "anonymised and shuffled per item.</p>" + "".join(blocks) + "</body></html>")
    return page, key


def _html(tables: Mapping[str, ReportTable], grids: Mapping[str, np.ndarray], test_set: TestSet,
          study: Path | None) -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>SerialGen evaluation</title><style>{_CSS}</style>"
             "</head><body><h1>SerialGen evaluation</h1>", _summary_html(test_set)]
    for table in tables.values():
        head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in table.rows)
        empty = "" if table.rows else f"<tr><td colspan={len(table.columns)}>no model of this kind in the lake</td></tr>"
        parts.append(f"<h2>{html.escape(table.title)}</h2><table><tr>{head}</tr>{body}{empty}</table>"
                     f"<p class=note>{html.escape(table.note)}</p>")
    columns = "reference | standardized | " + " | ".join(f"{c}: {p}" for p, c in test_set.prompts)
    for method, picture in grids.items():
        parts.append(f"<h2>Grid: {html.escape(_name(method))}</h2><p class=note>{html.escape(columns)}</p>"
                     f"<img class=grid src='{_data_uri(picture)}'>")
    if study is not None:
        parts.append(f"<h2>User study</h2><p>Blind sheet: <a href='{study.name}'>{study.name}</a> "
                     "(the key is stored apart, in user_study_key.json).</p>")
    return "".join(parts) + "</body></html>"


def _markdown(tables: Mapping[str, ReportTable], grid_files: Mapping[str, Path], test_set: TestSet,
              study: Path | None) -> str:
    lines = ["# SerialGen evaluation", "", _summary_text(test_set), ""]
    for table in tables.values():
        lines += [f"## {table.title}", "", "| " + " | ".join(table.columns) + " |",
                  "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.rows]
        lines += ["", table.note, ""]
    for method, path in grid_files.items():
        lines += [f"## Grid: {_name(method)}", "", f"![{path.stem}]({path.name})", ""]
    if study is not None:
        lines += ["## User study", "", f"Blind sheet: [{study.name}]({study.name}); key in user_study_key.json.", ""]
    return "\n".join(lines)


def _summary_text(test_set: TestSet) -> str:
    domains = defaultdict(int)
    for c in test_set.characters:
        domains[c.domain] += 1
    return (f"Test set: {len(test_set.characters)} characters ("
            + ", ".join(f"{n} {d}" for d, n in sorted(domains.items())) + f"), {len(test_set.prompts)} prompts, "
            f"{len(test_set.seeds)} seed(s); fingerprint {test_set.fingerprint}. Paper: 40 characters (20 anime, "
            "20 real) x 20 prompts x 4 seeds = 3,200 images per method.")


def _summary_html(test_set: TestSet) -> str:
    return f"<p>{html.escape(_summary_text(test_set))}</p>"


def _aggregates(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, str, str], Mapping[str, Any]]:
    return {(r["method"], r["stage"], r["metric"], r["domain"], r["prompt_category"]): r for r in rows
            if r["generation_id"] is None and r["pair_id"] is None and r["character_id"] is None}


def _by_method(generations: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in generations:
        out[row["method"]].append(row)
    return dict(sorted(out.items(), key=lambda kv: _method_order(kv[0])))


def _method_order(method: str) -> tuple[int, str]:
    order = list(METHOD_NAMES)
    return (order.index(method) if method in order else len(order), method)


def _name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _paper(value: Any) -> Any:
    return "—" if value is None else value


def _fmt(value: Any) -> str:
    return "—" if value is None else str(value)


def _data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(np.asarray(image)[..., :3])).decode()


_CSS = ("body{font-family:sans-serif;margin:24px;max-width:1500px}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}th{background:#eee}td:first-child{text-align:left}"
        ".note{color:#555;font-size:90%}"
        "img.grid{image-rendering:pixelated;border:1px solid #ccc}.row{display:flex;gap:8px}"
        "figure{margin:0;text-align:center}figure img{height:192px;border:1px solid #ccc}")
