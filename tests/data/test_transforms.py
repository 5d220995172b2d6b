"""data/transforms.py: ``resample`` and the paper's random flips and shifts, checked against geometry
(a flip is ``x.flip(-1)``, a shift moves a dot by shift x S / 28) rather than the code restated."""

from __future__ import annotations

import pytest
import torch

from alexnet.data.transforms import MAX_SHIFT, random_flips_and_shifts, resample


def test_random_flips_and_shifts_follow_the_paper():
    flip, shift = random_flips_and_shifts(20000, torch.Generator().manual_seed(0))
    assert flip.dtype == torch.bool and 0.48 < flip.float().mean() < 0.52
    assert shift.shape == (20000, 2) and shift.abs().max() <= MAX_SHIFT
    assert shift.min() < -0.95 * MAX_SHIFT and shift.max() > 0.95 * MAX_SHIFT


def test_resample_flip_is_flipping_the_input():
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    for size in (28, 67, 227):
        flipped = resample(x, size, flip=torch.ones(4, dtype=torch.bool))
        torch.testing.assert_close(flipped, resample(x.flip(-1), size), atol=1e-5, rtol=0)  # float rounding of the grid
        mixed = resample(x, size, flip=torch.tensor([True, False, True, False]))
        torch.testing.assert_close(mixed[1::2], resample(x[1::2], size), atol=0, rtol=0)


def test_resample_without_augmentation_equals_evaluation():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = resample(x, 67)
    assert torch.equal(resample(x, 67, flip=torch.zeros(3, dtype=torch.bool), shift=torch.zeros(3, 2)), plain)


@pytest.mark.parametrize("sx, sy", [(2.0, 0.0), (-1.5, 0.0), (0.0, 1.25), (0.75, -2.0)])
def test_a_shift_of_s_source_pixels_moves_a_dot_by_s_times_the_scale(sx, sy):
    size = 112  # 4 output pixels per source pixel
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 12, 14] = 1.0  # row 12, column 14

    def centroid(img):
        img = img[0, 0].double()
        rows, cols = torch.meshgrid(
            torch.arange(size, dtype=torch.double), torch.arange(size, dtype=torch.double), indexing="ij"
        )
        return (img * cols).sum() / img.sum(), (img * rows).sum() / img.sum()

    cx0, cy0 = centroid(resample(x, size))
    cx, cy = centroid(resample(x, size, shift=torch.tensor([[sx, sy]])))
    assert cx - cx0 == pytest.approx(sx * size / 28, abs=1e-3)  # positive x: to the right
    assert cy - cy0 == pytest.approx(sy * size / 28, abs=1e-3)  # positive y: down
    assert cx0 == pytest.approx((14 + 0.5) * size / 28 - 0.5, abs=1e-3)  # pixel centres line up
