"""Reference framing: the reference is cropped to its figure, in training and in the pipeline alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serialgen.config import StandardizerSettings
from serialgen.models import Standardizer, tiny_components
from serialgen.models.framing import figure_boxes, frame_reference
from serialgen.pipelines import StandardizationPipeline
from serialgen.standard_skeleton import canonical_skeleton
from serialgen.training.standardizer import diffusion_loss

H, W = 96, 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(top: int, left: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A red figure box on a blue background, its background mask and a white pose stroke down its middle."""
    image = torch.zeros(1, 3, H, W)
    image[:, 2] = 1.0
    mask = torch.ones(1, 1, H, W)
    pose = torch.zeros(1, 3, H, W)
    rows, cols = slice(top, top + height), slice(left, left + width)
    image[:, :, rows, cols] = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    mask[:, :, rows, cols] = 0.0
    pose[:, :, rows, left + width // 2] = 1.0
    return image, mask, pose


def _foreground_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(mask[0, 0] < 0.5, as_tuple=True)
    return ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1


def test_a_small_full_figure_is_cropped_to_fill_the_frame_with_its_margin():
    image, mask, pose = _scene(top=50, left=10, height=40, width=10)   # a wide shot, figure low and left
    framed, framed_mask, framed_pose = frame_reference(image, mask, pose, margin=0.1)
    top, bottom, left, right = _foreground_box(framed_mask)
    assert bottom - top == pytest.approx(H / 1.2, abs=1.5)             # 40 px tall -> 80 of 96 (10 % margins)
    assert (top + bottom) / 2 == pytest.approx(H / 2, abs=1) and (left + right) / 2 == pytest.approx(W / 2, abs=1)
    assert right - left == pytest.approx(10 * 2, abs=1.5)               # zoomed 2x like the height
    inside = framed[0, :, H // 2, W // 2]
    assert torch.allclose(inside, torch.tensor([1.0, -1.0, -1.0]), atol=1e-5)   # the figure's colour, unblurred
    assert framed_pose[0, 0, top:bottom].amax(1).min() > 0.4           # the pose stroke is cropped with it


def test_tiny_figures_are_zoomed_at_most_max_zoom_and_empty_masks_are_left_alone():
    theta = figure_boxes(_scene(40, 30, 4, 2)[1], max_zoom=4.0)
    assert theta[0, 0, 0].item() == pytest.approx(0.25) and theta[0, 1, 1].item() == pytest.approx(0.25)
    image, _, pose = _scene(40, 30, 4, 2)
    empty = torch.ones(1, 1, H, W)
    framed, framed_mask, framed_pose = frame_reference(image, empty, pose)
    assert torch.allclose(framed, image, atol=1e-4) and torch.equal(framed_mask, empty)
    assert torch.allclose(framed_pose, pose, atol=1e-4)


def test_outside_the_input_the_mask_is_background_and_the_pose_empty():
    image, mask, pose = _scene(top=0, left=0, height=48, width=24)      # in the corner: the box leaves the frame
    framed, framed_mask, framed_pose = frame_reference(image, mask, pose)
    assert framed_mask[0, 0, :, 0].min() == 1.0 and framed_mask[0, 0, 0, :].min() == 1.0
    assert framed_pose[0, :, :, 0].abs().max() == 0 and framed_pose[0, :, 0, :].abs().max() == 0
    assert torch.allclose(framed[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]), atol=1e-5)   # border repeated


def test_a_framing_model_saves_the_flag_and_its_pipeline_frames(tmp_path):
    torch.manual_seed(0)
    model = Standardizer.from_components(tiny_components(seed=0), frame_reference=True)
    for p in model.trainable_parameters():  # leave the zero-init: the reference must matter
        p.data.add_(torch.randn_like(p) * 0.02)
    loaded = Standardizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.frame_reference is True
    image, mask, pose = _scene(top=50, left=10, height=40, width=10)
    target_pose = torch.zeros(1, 3, H, W)
    run = lambda m, *ref: StandardizationPipeline(m).standardize(*ref, target_pose, 2, 1.0, 0)  # noqa: E731
    framed_inputs = frame_reference(image, mask, pose)
    loaded.frame_reference = False
    expected = run(loaded, *framed_inputs)           # the crop done by hand, model not framing
    plain = run(loaded, image, mask, pose)
    loaded.frame_reference = True
    ours = run(loaded, image, mask, pose)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert not np.allclose(ours.numpy(), plain.numpy(), atol=1e-3)


def test_training_reads_the_framed_reference():
    torch.manual_seed(0)
    model = Standardizer.from_components(tiny_components(seed=0), frame_reference=True)
    model.set_standard_skeleton(canonical_skeleton(W, H), W, H)
    for p in model.trainable_parameters():
        p.data.add_(torch.randn_like(p) * 0.02)
    image, mask, pose = _scene(top=50, left=10, height=40, width=10)
    batch = {"input_image": image, "background_mask": mask, "reference_pose_image": pose,
             "target_image": torch.zeros(1, 3, H, W), "target_pose_image": torch.zeros(1, 3, H, W)}
    framed = dict(zip(("input_image", "background_mask", "reference_pose_image"), frame_reference(image, mask, pose)))
    cfg = StandardizerSettings(reference_dropout=0.0)
    loss = lambda b: diffusion_loss(model, model, model.training_scheduler(), b, cfg,  # noqa: E731
                                    torch.Generator().manual_seed(0), torch.device("cpu")).item()
    ours = loss(batch)
    model.frame_reference = False
    assert ours == pytest.approx(loss({**batch, **framed}), rel=1e-5)
    assert ours != pytest.approx(loss(batch), rel=1e-3)
