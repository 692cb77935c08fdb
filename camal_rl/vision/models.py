"""torchvision classifiers that also return the spatial features Grad-CAM needs.

``create(name, num_classes)`` gives a module whose call returns ``(logits, features)`` with
features ``[B, K, h, w]`` taken where each architecture keeps its last spatial map:

=================  ==============================  ==========================================
architecture       features                        how they become ``[B, K, h, w]``
=================  ==============================  ==========================================
resnet18           ``layer4``                      already channels-first (512 x 7 x 7)
convnext_tiny      ``features[-1]``                already channels-first (768 x 7 x 7)
efficientnet_b0    ``features[-1]``                already channels-first (1280 x 7 x 7)
maxvit_t           ``blocks[-1]``                  already channels-first (512 x 7 x 7)
swin_v2_t          ``features[-1]``                channels-last (B, 7, 7, 768): permute
vit_b_16           ``encoder.layers[-1].ln_1``     tokens (B, 197, 768): drop the class token,
                                                   reshape to 14 x 14
small_cnn          last conv block                 a 4-layer CNN for quick CPU experiments
=================  ==============================  ==========================================

The reshaping happens inside a forward hook that returns a tensor rebuilt FROM the spatial view,
so the spatial view lies on the path to the logits and ``autograd.grad`` can reach it. ViT is
taken before the last block's attention: after the last block only the class token reaches the
head and the patch tokens would get no gradient. When a loss is built from its gradients (CAMAL
training, ``model(x, double_backward=True)``) its forward runs with the MATH attention kernel, the
only one with a double backward; everything else (Vanilla, evaluation) keeps the fast fused kernel.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn as nn

ARCHITECTURES = ("resnet18", "convnext_tiny", "efficientnet_b0", "vit_b_16", "swin_v2_t", "maxvit_t", "small_cnn")
# Transformers and MaxViT train with lr 1e-4, the rest with 1e-3 (paper, Table 7).
SLOW_LEARNERS = {"vit_b_16", "swin_v2_t", "maxvit_t"}


class PretrainedWeightsMissing(FileNotFoundError):
    pass


def default_learning_rate(name: str) -> float:
    return 1e-4 if name in SLOW_LEARNERS else 1e-3


class SmallCNN(nn.Module):
    """Four conv layers, features at 1/4 of the input: fast enough to train in CPU tests."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def tokens_to_spatial(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ViT tokens (B, 1 + h*w, C) -> (spatial [B, C, h, w], tokens rebuilt from it).

    Return the rebuilt tokens from a forward hook: the layers after it then depend on the spatial
    view, so ``autograd.grad`` can reach it (a reshaped copy made afterwards is not on the graph)."""
    batch, count, channels = tokens.shape
    side = int(round((count - 1) ** 0.5))
    spatial = tokens[:, 1:].reshape(batch, side, side, channels).permute(0, 3, 1, 2)
    rebuilt = torch.cat([tokens[:, :1], spatial.permute(0, 2, 3, 1).reshape(batch, side * side, channels)], dim=1)
    return spatial, rebuilt


def _channels_last_to_spatial(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    spatial = output.permute(0, 3, 1, 2)
    return spatial, spatial.permute(0, 2, 3, 1)


class SpatialClassifier(nn.Module):
    """Wraps a classifier; ``forward`` returns ``(logits, features [B, K, h, w])``."""

    def __init__(self, name: str, model: nn.Module, layer: nn.Module, to_spatial=None):
        super().__init__()
        self.name, self.model = name, model
        self._to_spatial = to_spatial
        self._features: torch.Tensor | None = None
        layer.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output):
        if self._to_spatial is None:
            self._features = output
            return None
        spatial, rebuilt = self._to_spatial(output)
        self._features = spatial
        return rebuilt  # downstream layers now depend on the spatial view

    def forward(self, x: torch.Tensor, *, double_backward: bool = False):
        """``double_backward``: a loss will be built from this forward's gradients (CAMAL training)."""
        self._features = None
        context = contextlib.nullcontext()
        if self.name == "vit_b_16" and double_backward:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            context = sdpa_kernel(SDPBackend.MATH)
        with context:
            logits = self.model(x)
        features, self._features = self._features, None
        return logits, features


def _replace_head(name: str, model: nn.Module, num_classes: int) -> None:
    def fresh(linear: nn.Linear) -> nn.Linear:
        return nn.Linear(linear.in_features, num_classes)

    if name == "resnet18":
        model.fc = fresh(model.fc)
    elif name in ("convnext_tiny", "efficientnet_b0"):
        index = -1
        model.classifier[index] = fresh(model.classifier[index])
    elif name == "vit_b_16":
        model.heads.head = fresh(model.heads.head)
    elif name == "swin_v2_t":
        model.head = fresh(model.head)
    elif name == "maxvit_t":
        model.classifier[-1] = fresh(model.classifier[-1])


def _load_pretrained(name: str, model: nn.Module) -> None:
    """ImageNet weights from the local torch hub cache; never downloads, never silently skips."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"--pretrained: ImageNet weights for {name} are not at {path}; copy {Path(weights.url).name} "
            f"there (this machine cannot download) or train without --pretrained"
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def create(name: str, num_classes: int, *, pretrained: bool = False, image_size: int = 224) -> SpatialClassifier:
    """A classifier returning ``(logits, features)``; see the module docstring for the layers."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if name == "small_cnn":
        if pretrained:
            raise ValueError("small_cnn has no pretrained weights")
        model = SmallCNN(num_classes)
        return SpatialClassifier(name, model, model.features)

    import torchvision.models as tvm

    builder = getattr(tvm, name)
    extra = {"image_size": image_size} if name == "vit_b_16" else {}
    if pretrained:
        if name == "vit_b_16" and image_size != 224:
            raise ValueError("pretrained vit_b_16 needs image_size 224")
        model = builder(weights=None, **extra)
        _load_pretrained(name, model)
        _replace_head(name, model, num_classes)
    else:
        model = builder(weights=None, num_classes=num_classes, **extra)
        if name == "vit_b_16":
            # torchvision zero-initialises the ViT head (for fine-tuning); a zero head gives an
            # all-zero Grad-CAM and no CAMAL gradient, so start from a default-initialised one.
            _replace_head(name, model, num_classes)

    if name == "resnet18":
        return SpatialClassifier(name, model, model.layer4)
    if name in ("convnext_tiny", "efficientnet_b0"):
        return SpatialClassifier(name, model, model.features[-1])
    if name == "maxvit_t":
        return SpatialClassifier(name, model, model.blocks[-1])
    if name == "swin_v2_t":
        return SpatialClassifier(name, model, model.features[-1], _channels_last_to_spatial)
    return SpatialClassifier(name, model, model.encoder.layers[-1].ln_1, tokens_to_spatial)  # vit_b_16
