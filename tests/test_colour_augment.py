"""Joint colour augmentation: one hue rotation per pair, greys kept, and only for the share asked."""

import math

import torch

from serialgen.training.colour import hue_rotation, recolour_jointly


def test_a_third_of_a_turn_maps_red_to_green_and_keeps_greys():
    turn = hue_rotation(2 * math.pi / 3)
    assert torch.allclose(turn @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    for grey in (0.0, 0.3, 1.0):
        assert torch.allclose(turn @ torch.full((3,), grey), torch.full((3,), grey), atol=1e-6)


def test_reference_and_target_of_a_pair_turn_together_and_pairs_apart():
    generator = torch.Generator().manual_seed(0)
    colour = torch.tensor([0.8, -0.6, -0.2]).view(1, 3, 1, 1).expand(8, 3, 4, 4).clone()
    white = torch.ones(8, 3, 4, 4)
    reference, target, background = recolour_jointly([colour, colour.clone(), white], 1.0, generator)
    assert torch.equal(reference, target)                      # one rotation per pair
    assert torch.allclose(background, white, atol=1e-6)        # white stays white
    assert not torch.allclose(reference, colour, atol=0.05)    # the colours moved
    assert len({tuple(reference[i, :, 0, 0].round(decimals=3).tolist()) for i in range(8)}) == 8  # each pair its own


def test_share_picks_that_share_of_pairs_and_zero_draws_nothing():
    images = torch.tensor([0.9, -0.9, -0.5]).view(1, 3, 1, 1).expand(400, 3, 2, 2).clone()
    (turned,) = recolour_jointly([images], 0.25, torch.Generator().manual_seed(1))
    changed = (turned - images).abs().flatten(1).amax(1) > 1e-4
    assert 70 < int(changed.sum()) < 130
    generator = torch.Generator().manual_seed(2)
    (same,) = recolour_jointly([images], 0.0, generator)
    assert same is images
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=torch.Generator().manual_seed(2)))
