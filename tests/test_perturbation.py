"""The regulariser study on made-up masks reproduces the paper's qualitative result."""

import numpy as np

from camal_rl.vision import perturbation


def blobs(count=6):
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(count):
        mask = np.zeros((64, 64), np.uint8)
        top, left = rng.integers(8, 24, size=2)
        height, width = rng.integers(20, 30, size=2)
        mask[top : top + height, left : left + width] = 1
        masks.append(mask)
    return masks


def test_erosion_suppress_flat_camal_monotonic_and_shift_correlated():
    results = perturbation.study(blobs(), severities=range(0, 9))
    erode = results["erode"]
    assert np.allclose(erode["curves"]["suppress"], 0)  # attention stays inside: beta never moves
    assert (np.diff(erode["curves"]["camal"], axis=1) >= -1e-7).all()  # CAMAL rises monotonically
    assert erode["summary"]["camal_spearman"]["mean"] > 0.99
    assert erode["summary"]["suppress_spearman"]["images"] == 0  # no response -> no correlation
    assert results["shift"]["summary"]["camal_spearman"]["mean"] > 0.95
    assert results["shift"]["summary"]["camal_pearson"]["mean"] > 0.9
    assert results["dilate"]["summary"]["camal_spearman"]["mean"] > 0.95
    table = perturbation.table(results, "blobs")
    assert "| blobs | Erode |" in table and "—" in table


def test_figure_is_written(tmp_path):
    masks = blobs(2)
    results = perturbation.study(masks, severities=range(0, 5))
    perturbation.figure(results, masks[0], tmp_path / "fig.png", severity=2)
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
