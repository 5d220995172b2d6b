"""data/stats.py's exact statistics of uint8 images, against numpy in float64."""

import numpy as np
import pytest
import torch

from alexnet.data.stats import uint8_stats


@pytest.mark.parametrize("shape", [(2, 1, 3, 3), (50, 1, 28, 28), (7, 3, 5, 4)])
def test_uint8_stats_are_numpys_float64_mean_and_std(shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pixels = images.numpy().astype(np.float64) / 255
    mean, std = uint8_stats(images)
    assert mean == pytest.approx(pixels.mean(), rel=1e-15)
    assert std == pytest.approx(pixels.std(ddof=1), rel=1e-12)  # Tensor.std's n - 1


def test_one_flat_shade_has_a_std_of_exactly_zero_on_any_number_of_threads():
    images = torch.full((320, 1, 28, 28), 7, dtype=torch.uint8)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert uint8_stats(images) == (7 / 255, 0.0)
    finally:
        torch.set_num_threads(threads)


def test_one_pixel_or_none():
    assert uint8_stats(torch.tensor([255], dtype=torch.uint8)) == (1.0, 0.0)
    assert uint8_stats(torch.zeros(0, dtype=torch.uint8)) == (0.0, 0.0)
