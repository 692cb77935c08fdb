"""torchvision classifiers that also return the spatial features Grad-CAM needs.

``create(name, num_classes)`` gives a module whose call returns ``(logits, features)`` with
features ``[B, K, h, w]`` taken where each architecture keeps its last spatial map. The registry
``ARCHITECTURES`` holds one row per architecture (builder, feature layer, head, reshaping,
learning rate); adding one is adding a row:

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
head and the patch tokens would get no gradient. When a loss may be built from its gradients (a
training-mode forward with gradients on, or ``model(x, double_backward=True)``) its forward runs
with the MATH attention kernel, the only one with a double backward; ``double_backward=False``
(Vanilla training) and evaluation keep the fast fused kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from camal_rl.errors import CamalError, ConfigError


class PretrainedWeightsMissing(CamalError, FileNotFoundError):
    pass


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


@dataclass(frozen=True)
class Architecture:
    """One row of the registry: how to build a model and where its attention features are."""

    build: Callable[[int, int], nn.Module]  # (num_classes, image_size) -> a model without pretrained weights
    feature_layer: Callable[[nn.Module], nn.Module]  # the module whose output are the spatial features
    head: str | None = None  # attribute path of the final linear layer ("classifier.-1"); None: no pretrained head
    to_spatial: Callable | None = None  # output -> (spatial [B, K, h, w], output rebuilt from it); None: as is
    learning_rate: float = 1e-3  # paper, Table 7
    math_attention_for_double_backward: bool = False  # its fused attention kernel has no double backward


def _torchvision(name: str, **fixed) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, image_size: int) -> nn.Module:
        import torchvision.models as tvm

        extra = {"image_size": image_size} if name == "vit_b_16" else {}
        return getattr(tvm, name)(weights=None, num_classes=num_classes, **extra, **fixed)

    return build


# The registry: adding a classifier is one row (and a builder, if torchvision has none).
ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": Architecture(_torchvision("resnet18"), lambda m: m.layer4, head="fc"),
    "convnext_tiny": Architecture(_torchvision("convnext_tiny"), lambda m: m.features[-1], head="classifier.-1"),
    "efficientnet_b0": Architecture(_torchvision("efficientnet_b0"), lambda m: m.features[-1], head="classifier.-1"),
    "vit_b_16": Architecture(_torchvision("vit_b_16"), lambda m: m.encoder.layers[-1].ln_1, head="heads.head",
                             to_spatial=tokens_to_spatial, learning_rate=1e-4, math_attention_for_double_backward=True),
    "swin_v2_t": Architecture(_torchvision("swin_v2_t"), lambda m: m.features[-1], head="head",
                              to_spatial=_channels_last_to_spatial, learning_rate=1e-4),
    "maxvit_t": Architecture(_torchvision("maxvit_t"), lambda m: m.blocks[-1], head="classifier.-1",
                             learning_rate=1e-4),
    "small_cnn": Architecture(lambda num_classes, image_size: SmallCNN(num_classes), lambda m: m.features),
}


# For typed options (tyro builds the choices of --model from it).
ArchitectureName = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]


def default_learning_rate(name: str) -> float:
    return ARCHITECTURES[name].learning_rate


class SpatialClassifier(nn.Module):
    """Wraps a classifier; ``forward`` returns ``(logits, features [B, K, h, w])``."""

    def __init__(self, name: str, model: nn.Module, layer: nn.Module, to_spatial=None, math_attention: bool = False):
        super().__init__()
        self.name, self.model = name, model
        self._to_spatial = to_spatial
        self._math_attention = math_attention
        self._features: torch.Tensor | None = None
        layer.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output):
        if self._to_spatial is None:
            self._features = output
            return None
        spatial, rebuilt = self._to_spatial(output)
        self._features = spatial
        return rebuilt  # downstream layers now depend on the spatial view

    def forward(self, x: torch.Tensor, *, double_backward: bool | None = None):
        """``double_backward``: a loss will be built from this forward's gradients (CAMAL training).
        Default (None): assumed whenever gradients are on in training mode, so a CAMAL loss always
        works; pass False for a faster forward where no such loss follows (Vanilla training)."""
        if double_backward is None:
            double_backward = torch.is_grad_enabled() and self.training
        self._features = None
        context = contextlib.nullcontext()
        if self._math_attention and double_backward:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            context = sdpa_kernel(SDPBackend.MATH)
        with context:
            logits = self.model(x)
        features, self._features = self._features, None
        return logits, features


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    """Put a freshly initialised linear layer with ``num_classes`` outputs at ``path`` ("classifier.-1")."""
    *parents, last = path.split(".")
    owner = model
    for part in parents:
        owner = owner[int(part)] if part.lstrip("-").isdigit() else getattr(owner, part)
    old = owner[int(last)] if last.lstrip("-").isdigit() else getattr(owner, last)
    fresh = nn.Linear(old.in_features, num_classes)
    if last.lstrip("-").isdigit():
        owner[int(last)] = fresh
    else:
        setattr(owner, last, fresh)


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
    """A classifier returning ``(logits, features)``; ``ARCHITECTURES`` says where each one's features are."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    architecture = ARCHITECTURES[name]
    if pretrained:
        if architecture.head is None:
            raise ConfigError(f"{name} has no pretrained weights")
        if name == "vit_b_16" and image_size != 224:
            raise ConfigError("pretrained vit_b_16 needs image_size 224")
        model = architecture.build(1000, image_size)  # ImageNet's head, replaced after loading
        _load_pretrained(name, model)
        _replace_head(model, architecture.head, num_classes)
    else:
        model = architecture.build(num_classes, image_size)
        if name == "vit_b_16":
            # torchvision zero-initialises the ViT head (for fine-tuning); a zero head gives an
            # all-zero Grad-CAM and no CAMAL gradient, so start from a default-initialised one.
            _replace_head(model, architecture.head, num_classes)
    return SpatialClassifier(name, model, architecture.feature_layer(model), architecture.to_spatial,
                             architecture.math_attention_for_double_backward)
