"""Deletion / insertion on a model whose confidence is known by construction."""

import numpy as np
import pytest
import torch

from camal_rl.vision import faithfulness


class RegionModel(torch.nn.Module):
    """P(class 0) = mean of the input over a fixed region (the input is all ones there)."""

    def __init__(self, region):
        super().__init__()
        self.region = region

    def forward(self, x):
        p = x[:, 0][:, self.region].mean(1).clamp(1e-6, 1 - 1e-6)
        return torch.stack([p.log(), (1 - p).log()], dim=1)


def setup():
    region = torch.zeros(20, 20, dtype=torch.bool)
    region[:10, :10] = True  # 25 % of the pixels
    return RegionModel(region), torch.ones(1, 20, 20), region


def test_perfect_attention_gives_known_aucs():
    model, image, region = setup()
    attention = region.float() + 0.01 * torch.rand(20, 20)  # region first
    result = faithfulness.deletion_insertion(model, image, attention, steps=20)
    assert result["target"] == 0
    # deletion: 1 - k/0.25 until k = 0.25, then 0 -> AUC 0.125; insertion: the mirror -> 0.875
    assert result["deletion_auc"] == pytest.approx(0.125, abs=1e-3)
    assert result["insertion_auc"] == pytest.approx(0.875, abs=1e-3)
    assert result["deletion"][0] == pytest.approx(1, abs=1e-4) and result["insertion"][0] == pytest.approx(0, abs=1e-4)


def test_reversed_attention_gives_worse_aucs():
    model, image, region = setup()
    attention = (~region).float()  # region last
    result = faithfulness.deletion_insertion(model, image, attention, steps=20)
    # deletion keeps full confidence until 75 % are gone: AUC = 0.75 + 0.125
    assert result["deletion_auc"] == pytest.approx(0.875, abs=1e-3)
    assert result["insertion_auc"] == pytest.approx(0.125, abs=1e-3)


def test_one_per_class():
    labels = np.array([0, 0, 1, 2, 2, 2])
    chosen = faithfulness.one_per_class(labels, seed=0)
    assert sorted(labels[chosen].tolist()) == [0, 1, 2]
    assert chosen == faithfulness.one_per_class(labels, seed=0)
