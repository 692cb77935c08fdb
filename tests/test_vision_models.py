"""The six torchvision architectures (+ small_cnn): [B, h, w] attention and CAMAL gradients."""

import pytest
import torch

pytest.importorskip("torchvision", reason="the vision extra installs torchvision")

from camal_rl import camal  # noqa: E402
from camal_rl.vision import models  # noqa: E402

SIZES = {"maxvit_t": 224}  # MaxViT's 7x7 windows need 224; the rest run at 64


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny", "efficientnet_b0", "vit_b_16", "swin_v2_t", "maxvit_t",
                                  "small_cnn"])
def test_attention_and_camal_gradient(name):
    torch.manual_seed(0)
    size = SIZES.get(name, 64)
    model = models.create(name, num_classes=3, image_size=size)
    model.train()
    x = torch.randn(2, 3, size, size)
    logits, features = model(x, double_backward=True)  # a loss will be built from gradients
    assert logits.shape == (2, 3)
    assert features.dim() == 4 and features.shape[0] == 2
    scores = logits[torch.arange(2), torch.tensor([0, 2])]
    maps = camal.attention_map(features, scores, (size, size))
    assert maps.shape == (2, size, size)
    assert maps.abs().sum() > 0
    mask = torch.zeros(2, size, size)
    mask[:, size // 4 : size // 2, size // 4 : size // 2] = 1
    camal.camal_loss(maps, mask).backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0  # reaches the stem, below the features


def test_unknown_model_and_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="resnet18"):
        models.create("resnet19", 3)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(models.PretrainedWeightsMissing, match="resnet18-.*\\.pth"):
        models.create("resnet18", 3, pretrained=True)


def test_pretrained_weights_load_from_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    (tmp_path / "checkpoints").mkdir()
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / weights.url.split("/")[-1])
    model = models.create("resnet18", 5, pretrained=True)
    assert torch.equal(model.model.conv1.weight, reference.conv1.weight)
    assert model.model.fc.out_features == 5
