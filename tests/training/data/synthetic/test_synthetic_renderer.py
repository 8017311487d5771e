"""The B-mode renderer (training/data/synthetic/renderer.py): speckle inside the probe's field of view, black
outside, and a log-compressed display."""

import numpy as np
import pytest

from m2dino_training.data.synthetic.renderer import GROUP_STYLES, Canvas, field_of_view_at, field_of_view_raster, render


def rendered(probe, echogenicity, size=64, seed=0):
    """A uniform canvas of one echogenicity, rendered with the breast group's look."""
    canvas = Canvas(size, np.random.default_rng(seed), probe, task=None, parts={})
    canvas.echo[:] = echogenicity
    return render(canvas, GROUP_STYLES["breast"])


@pytest.mark.parametrize("probe", ["convex", "phased", "linear"])
def test_speckle_fills_the_field_of_view_and_nothing_else(probe):
    image = rendered(probe, 1.0)
    inside, gain = field_of_view_raster(64, probe, GROUP_STYLES["breast"].atten_db)
    assert image.dtype == np.uint8 and image.shape == (64, 64)
    assert (image[~inside] == 0).all() and (gain[~inside] == 0).all()
    assert image[inside].std() > 10  # speckle, not a flat fill
    centres = (np.arange(64) + 0.5) / 64
    assert np.array_equal(field_of_view_at(probe, centres[None, :], centres[:, None])[0], inside)


def test_ten_times_the_echogenicity_is_20_db_brighter():
    """Log compression: the same scatterers at a tenfold amplitude gain 20 dB, i.e. 20 x 255 / 50 grey levels
    on the 50 dB display, wherever neither image is clipped."""
    dim, bright = rendered("linear", 0.3).astype(int), rendered("linear", 3.0).astype(int)
    unclipped = (dim > 0) & (bright < 255)
    assert unclipped.mean() > 0.5
    assert np.abs(bright - dim - 102)[unclipped].max() <= 1
