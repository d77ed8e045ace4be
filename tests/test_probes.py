"""The evaluation probes: vocabulary from render metadata, retrieval ranks, and a probe trained on a real tiny
lake (bpy renders, Ray compositing) that tells held-out characters apart and reads framing and background."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from serialgen.evaluation.evaluators import prompt_accuracy
from serialgen.probes import load_probes
from serialgen.probes.validation import ranks
from serialgen.synthetic.vocabulary import (
    APPEARANCE,
    ATTRIBUTES,
    background_label,
    caption,
    framing_label,
    prompt_labels,
    view_label,
)


def _camera(azimuth_deg: float, distance: float = 3.0) -> list[float]:
    """A camera vector (3x4 row-major camera-to-world, lens, sensor) at ``azimuth_deg`` from the character's front."""
    az = math.radians(azimuth_deg)
    x, y = distance * math.sin(az), -distance * math.cos(az)
    return [1, 0, 0, x, 0, 1, 0, y, 0, 0, 1, 1.5, 50.0, 36.0]


@pytest.mark.parametrize("azimuth, view", [(0, "front"), (40, "front"), (-40, "front"), (90, "side"), (270, "side"),
                                           (180, "back"), (150, "back"), (-140, "back"), (60, "side")])
def test_view_label_is_measured_from_the_characters_front(azimuth, view):
    assert view_label(_camera(azimuth)) == view


def _torso(yaw_deg: float) -> list[list[float]]:
    """COCO-18 keypoints of a torso 40 px wide and 60 px long turned ``yaw_deg`` from the camera (orthographic)."""
    half = 20 * math.cos(math.radians(yaw_deg))
    points = [[50.0, 40.0, 1.0]] * 18
    points[1] = [50.0, 40.0, 1.0]                                     # neck
    points[2], points[5] = [50 - half, 42.0, 1.0], [50 + half, 42.0, 1.0]  # right / left shoulder
    points[8], points[11] = [50 - half, 100.0, 1.0], [50 + half, 100.0, 1.0]  # right / left hip
    return points


@pytest.mark.parametrize("yaw, view", [(0, "front"), (30, "front"), (-40, "front"), (60, "side"), (90, "side"),
                                       (-120, "side"), (150, "back"), (180, "back")])
def test_view_from_keypoints_follows_the_torso_not_the_camera(yaw, view):
    from serialgen.synthetic.vocabulary import torso_facing, view_from_keypoints

    assert view_from_keypoints(_torso(yaw), front=torso_facing(_torso(0))) == view


def test_framing_background_and_action_labels_from_metadata():
    assert [framing_label(f) for f in ("full", "bust", "head", "cutoff-left-0.40")] == ["full", "bust", "head", "cutoff"]
    assert framing_label("full", cut_side="top") == "cutoff" and framing_label("bust", cut_side="top") == "bust"
    assert [background_label(u) for u in ("procedural://0/0", "procedural://0/4", "procedural://7/11")] == \
        ["indoor", "outdoor", "texture"]
    assert background_label(None) == "plain" and background_label("file:///x.png") is None


def test_captions_read_back_to_their_labels_for_every_label():
    for name, labels in ATTRIBUTES.items():
        for label in labels:
            assert prompt_labels(caption({name: label})) == {name: label}
    labels = {"framing": "bust", "view": "side", "action": "walking", "background": "indoor"}
    assert caption(labels) == "a character, bust shot, side view, walking, in a room"
    assert prompt_labels(caption(labels)) == labels


def test_prompt_accuracy_counts_the_named_attributes_only():
    seen = {"framing": "bust", "view": "front", "background": "outdoor", "action": "walking"}
    assert prompt_accuracy("a character, bust shot, back view", seen) == 0.5
    assert prompt_accuracy("a character, bust shot, front view, outdoors", seen) == 1.0
    assert math.isnan(prompt_accuracy("a person smiling", seen))


def test_ranks_put_the_own_character_first_only_when_it_is_nearest():
    distance = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.3, 0.1], [0.4, 0.4, 0.4]])
    assert ranks(distance, ["a", "b", "c"], ["a", "b", "c"]).tolist() == [1, 3, 1]


@pytest.fixture(scope="module")
def probe_lake(synthetic_lake):
    """The probes trained on the shared synthetic lake: 7 characters train them, 5 are held out."""
    from serialgen.stages.train_probes import run_train_probes

    return synthetic_lake, run_train_probes(synthetic_lake)


@pytest.mark.slow
def test_identity_probe_ranks_a_held_out_characters_own_images_above_other_characters(probe_lake):
    from serialgen.probes.data import read_probe_images

    settings, report = probe_lake
    probes = load_probes(report.folder)
    held_out = read_probe_images(settings.open_lake(), probes.size, 0.62).where("test")
    characters = sorted(set(held_out.character_ids))
    assert len(characters) == 5
    embedding = probes.embed_prepared(held_out.identity)
    similarity = (embedding @ embedding.T).numpy()
    owner = np.array(held_out.character_ids)
    margins = []
    for character in characters:  # renders, pairs and the standard view of one character vs everyone else's
        mine = np.flatnonzero(owner == character)
        others = np.flatnonzero(owner != character)
        same = similarity[np.ix_(mine, mine)][~np.eye(len(mine), dtype=bool)].mean()
        margins.append(same - similarity[np.ix_(mine, others)].mean())
    assert min(margins) > 0 and np.mean(margins) > 0.2, margins


@pytest.mark.slow
def test_attribute_probe_reads_background_kind_better_than_the_majority_class(probe_lake):
    _, report = probe_lake
    attributes = report.metrics["validation"]["attributes"]
    background = attributes["background"]
    assert background["accuracy"] >= background["majority"] + 0.2
    assert {"hair_colour", "hair_style", "top", "top_colour"} <= set(attributes)  # appearance is read too


def test_appearance_recovery_needs_every_shape_and_counts_known_colours():
    from serialgen.evaluation.standardizer_table import appearance_recovery

    truth = {"hair_colour": "blond", "hair_style": "bob", "top": "dress", "top_colour": "red"}  # no bottom: a dress
    right = {**truth, "bottom": "skirt", "bottom_colour": "blue"}
    wrong_top = {**right, "top": "jacket", "hair_colour": "black"}
    shapes, colours = appearance_recovery([right, wrong_top, right], [truth, truth, None])
    assert shapes[:2].tolist() == [1.0, 0.0] and colours[:2].tolist() == [1.0, 0.5]
    assert np.isnan(shapes[2]) and np.isnan(colours[2])


def test_probes_in_an_older_format_are_retrained_not_loaded(tmp_path):
    from serialgen.checkpoints import PROBES_FORMAT, stale_probes
    from serialgen.config import load_settings

    settings = load_settings(profile="tiny", lake=str(tmp_path / "lake"))
    settings = settings.model_copy(update={"probes": settings.probes.model_copy(update={"checkpoint_dir": tmp_path})})
    assert stale_probes(settings) is None                                   # nothing trained yet
    (tmp_path / "probes.json").write_text(json.dumps({"format": "serialgen-probes/1"}))
    assert "serialgen-probes/1" in stale_probes(settings)
    (tmp_path / "probes.json").write_text(json.dumps({"format": PROBES_FORMAT}))
    assert stale_probes(settings) is None


@pytest.mark.slow
def test_probe_folder_round_trips_and_a_missing_file_is_one_clear_error(probe_lake, tmp_path):
    import shutil

    _, report = probe_lake
    probes = load_probes(report.folder)
    config = json.loads((report.folder / "probes.json").read_text())
    assert config["validation"] == report.metrics["validation"] and probes.version == report.metrics["version"]
    image = np.full((96, 64, 3), 255, np.uint8)
    image[20:80, 20:44] = (200, 30, 30)
    foreground = np.where(image[..., 1] < 100, 255, 0).astype(np.uint8)
    first = probes.embed([image], [foreground])
    again = load_probes(report.folder).embed([image], [foreground])
    assert torch.equal(first, again) and first.norm().item() == pytest.approx(1.0, abs=1e-5)
    reading = probes.describe([image], [foreground])[0]
    assert set(reading) == set(APPEARANCE) and reading == load_probes(report.folder).describe([image], [foreground])[0]
    seen = probes.classify([image], [foreground])[0]
    assert set(seen) == set(ATTRIBUTES) and seen == load_probes(report.folder).classify([image], [foreground])[0]
    broken = tmp_path / "broken"
    shutil.copytree(report.folder, broken)
    (broken / "identity.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing identity.safetensors in .*broken: the evaluation probes"):
        load_probes(broken)
    shutil.copy(report.folder / "identity.safetensors", broken)
    (broken / "figure.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing figure.safetensors in .*broken"):
        load_probes(broken)


def _white_background_mask(image: np.ndarray) -> np.ndarray:
    """Figures drawn on white (standard views, renders over white): foreground = not white."""
    return np.where(np.asarray(image)[..., :3].min(-1) < 245, 255, 0).astype(np.uint8)


@pytest.mark.slow
def test_evaluate_scores_the_right_character_above_a_shuffled_one_and_tables_name_the_probes(probe_lake):
    from serialgen.evaluation.evaluators import ProbeEvaluator
    from serialgen.evaluation.metrics import remove_background
    from serialgen.evaluation.report import build_tables
    from serialgen.evaluation.scoring import score_generations
    from serialgen.evaluation.testset import TestCharacter
    from serialgen.storage.images import decode_image, encode_png

    settings, report = probe_lake
    lake = settings.open_lake()
    held_out = {r["character_id"]: r for r in lake.read("standards").to_pylist()
                if r["character_id"] in set(report.metrics["held_out_characters"])}
    renders: dict[str, list[np.ndarray]] = {}
    for r in lake.read("renders", columns=["character_id", "rgba"]).to_pylist():
        if r["character_id"] in held_out:
            rgba = decode_image(r["rgba"], "RGBA")
            renders.setdefault(r["character_id"], []).append(remove_background(rgba, lambda im: im[..., 3]))
    ids = sorted(held_out)
    references = {c: TestCharacter(c, "synthetic", decode_image(held_out[c]["image"], "RGB"), "standard") for c in ids}
    prompts = ["a character, full body, on a plain white background", "a character, full body, front view"]
    rows = []
    for method, shift in (("right_character", 0), ("shuffled_reference", 1)):
        for k, character in enumerate(ids):
            shown = ids[(k + shift) % len(ids)]
            for p, prompt in enumerate(prompts):
                image = renders[shown][p % len(renders[shown])]
                rows.append({"generation_id": f"{method}-{character}-{p}", "method": method, "character_id": character,
                             "personalizer_version": method, "standardizer_version": None, "prompt": prompt,
                             "prompt_category": "background", "standardized_reference": None,
                             "image": encode_png(image)})
    masked = []

    def counted_mask(image: np.ndarray) -> np.ndarray:
        masked.append(image.shape)
        return _white_background_mask(image)

    evaluator = ProbeEvaluator(load_probes(report.folder), counted_mask)
    scored = score_generations(evaluator, rows, references, "probe-test")
    assert len(masked) == len(ids) + len(rows)  # each reference and each output cut out once, for both probes
    aggregate = {(r["method"], r["metric"]): r["value"] for r in scored
                 if r["generation_id"] is None and r["character_id"] is None and r["domain"] == "all"
                 and r["prompt_category"] == "all"}
    assert aggregate[("right_character", "id_sim")] > aggregate[("shuffled_reference", "id_sim")] + 0.1
    assert aggregate[("right_character", "id_top1")] > aggregate[("shuffled_reference", "id_top1")]
    assert aggregate[("right_character", "prompt_acc")] is not None
    assert {"ap_id_sim", "id_sim", "id_top1", "prompt_acc"} <= {m for _, m in aggregate}
    assert not {"clip_i", "clip_t", "face_sim"} & {m for _, m in aggregate}
    tables = build_tables(scored, scored, evaluator, [])
    assert tables["table1"].columns[1:4] == ["prompt accuracy", "ID-Sim", "ID top-1"]
    assert evaluator.probes.version in tables["table2"].note and "held-out retrieval top-1" in tables["table2"].note


@pytest.mark.slow
def test_table2_scores_name_the_right_character_and_catch_replication(probe_lake):
    """Outputs that are the characters' own standard views score ID top-1 1 and ID-Sim 1; the same outputs
    assigned to the next character score top-1 0; an output equal to its reference has replication 1."""
    from serialgen.evaluation.personalizer_table import Outputs, score, summary
    from serialgen.evaluation.standardizer_table import figure_on_white
    from serialgen.synthetic.labelled import labelled_images

    settings, report = probe_lake
    probes = load_probes(report.folder)
    standards = {i.character_id: i.rgb for i in labelled_images(settings.open_lake(), sources=("standard",))}
    ids = sorted(standards)
    prompts = ["a character, full body, front view, standing", "a character, bust shot, side view"]
    items = [(c, p) for c in ids for p in prompts]
    own = score(Outputs("own", [c for c, _ in items], [p for _, p in items], [0] * len(items),
                        [standards[c] for c, _ in items], [standards[c] for c, _ in items]),
                probes, figure_on_white, standards)
    assert own.scores["id_top1"].tolist() == [1.0] * len(items)
    assert own.scores["id_sim"] == pytest.approx(1.0, abs=1e-5)
    assert own.scores["replication"] == pytest.approx(1.0, abs=1e-5)
    assert own.scores["ap_id_sim"] == pytest.approx(1.0, abs=1e-5) and len(own.ap_groups) == len(ids)
    shifted = {c: standards[ids[(k + 1) % len(ids)]] for k, c in enumerate(ids)}
    other = score(Outputs("next", [c for c, _ in items], [p for _, p in items], [0] * len(items),
                          [shifted[c] for c, _ in items], [standards[c] for c, _ in items]), probes,
                  figure_on_white, standards)
    assert other.scores["id_top1"].tolist() == [0.0] * len(items)
    assert summary(other)["id_sim"][0] < summary(own)["id_sim"][0] - 0.1
    assert summary(other)["replication"][0] < 0.99


def test_framed_similarity_compares_each_pair_at_its_narrower_framing():
    from serialgen.probes.framed import AS_IS, FramedEmbeddings

    basis = torch.eye(6)  # orthonormal: each cosine below says which two versions were compared
    # query 0 full body, 1 bust, 2 head; gallery 0 full body, 1 bust
    queries = FramedEmbeddings(["full", "bust", "head"], {AS_IS: basis[[0, 1, 2]], "bust": basis[[3, 1, 1]],
                                                          "head": basis[[4, 4, 2]]})
    gallery = FramedEmbeddings(["full", "bust"], {AS_IS: basis[[0, 1]], "bust": basis[[1, 1]],
                                                  "head": basis[[2, 2]]})
    similarity = queries.similarity(gallery)
    # full vs full: whole images; bust vs full: the full one cut to a bust; head vs anything wider: cut to a head
    assert similarity.tolist() == [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    whole = queries.embeddings[AS_IS] @ gallery.embeddings[AS_IS].T
    assert whole.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    # a full-body query against a bust gallery image is cut to a bust itself (basis 3), not compared whole
    assert similarity[0, 1] == 0.0 and queries[[0]].embeddings["bust"].tolist() == [basis[3].tolist()]


def test_a_close_up_shows_the_top_of_the_framed_figure_enlarged():
    from serialgen.probes.inputs import close_up

    figure = torch.ones(1, 3, 96, 64)
    figure[:, :, :24] = 0.0        # the top quarter of the frame is black
    cut = close_up(figure, 0.25)   # ... and fills the whole close-up
    assert cut[:, :, 4:-4, 4:-4].max() < 0.05
    assert torch.allclose(close_up(figure, 1.0), figure, atol=1e-5)


def test_mirror_averaged_classifiers_read_an_image_and_its_mirror_alike(settings):
    from serialgen.probes.model import build_probes, probe_config

    probes = build_probes(probe_config(settings.probes))
    assert probes.flip_average  # new folders' classifiers read mirror-averaged; older ones as they were validated

    class LeftEdge(torch.nn.Module):  # a classifier that reads only the image's left edge: far from mirror-invariant
        heads = ("framing", "background")

        def forward(self, x):
            return {name: x[:, 0, :4, :4].flatten(1) for name in self.heads}

    probes.scene = LeftEdge()
    x = torch.zeros(2, 3, *probes.size)
    x[:, :, :, : probes.size[1] // 3] = torch.rand(2, 3, probes.size[0], 1)
    mirrored = x.flip(-1)
    read = lambda images: probes.classify_prepared(images, images)["framing"]  # noqa: E731
    assert torch.allclose(read(x), read(mirrored), atol=1e-6)
    probes.flip_average = False
    assert not torch.allclose(read(x), read(mirrored), atol=1e-2)
