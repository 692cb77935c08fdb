"""The Prior baseline: reference regions from CLIP instead of ground-truth masks (Appendix B).

As recent attention-supervision work does, a CLIP image encoder is explained with Grad-CAM for
the text prompt of the image's class ("a photo of a {class}"; target = cosine similarity of
image and text embeddings), the normalised map is thresholded into a binary region, and the
classifier is then trained with the same CAMAL objective against that region. Regions are
computed once per image and cached on disk.

Needs the ``prior`` extra (open_clip). Weights come from a local file; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from camal_rl import camal
from camal_rl.errors import ConfigError
from camal_rl.files import atomic_path
from camal_rl.vision.data import IMAGENET_MEAN, IMAGENET_STD, DecoyDigits
from camal_rl.vision.models import tokens_to_spatial

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_clip(model_name: str, weights: str | None, device="cpu"):
    """An open_clip model and tokenizer; ``weights`` must be a local file."""
    try:
        import open_clip
    except ImportError:
        raise ConfigError("--method prior needs open_clip: pip install -e '.[prior]'") from None
    if not weights or not Path(weights).is_file():
        raise ConfigError(f"CLIP weights file not found: {weights!r}; give --prior-weights PATH "
                         f"(an open_clip checkpoint for {model_name}; this machine cannot download)")
    model = open_clip.create_model(model_name, pretrained=str(weights), device=device)
    return model.eval(), open_clip.get_tokenizer(model_name)


class ClipGradCAM:
    """Batch-level Grad-CAM of CLIP image-text similarity, at the encoder's last spatial layer."""

    def __init__(self, model, tokenizer, class_names: list[str], *, prompt: str = "a photo of a {}", device="cpu"):
        self.model, self.device = model.to(device).eval(), device
        visual = model.visual
        self._features = None
        if hasattr(visual, "transformer"):  # ViT: tokens before the last block's attention
            visual.transformer.resblocks[-1].ln_1.register_forward_hook(self._tokens_hook)
        else:  # ModifiedResNet
            visual.layer4.register_forward_hook(lambda m, i, o: setattr(self, "_features", o))
        size = visual.image_size
        self.image_size = size if isinstance(size, int) else size[0]
        with torch.no_grad():
            tokens = tokenizer([prompt.format(name) for name in class_names]).to(device)
            self.text = F.normalize(model.encode_text(tokens).float(), dim=-1)

    def _tokens_hook(self, module, inputs, output):
        self._features, rebuilt = tokens_to_spatial(output)
        return rebuilt

    def to_clip_input(self, images: torch.Tensor, imagenet_normalized: bool) -> torch.Tensor:
        if imagenet_normalized:
            mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
            images = images * std + mean
        images = F.interpolate(images.clamp(0, 1), size=(self.image_size, self.image_size), mode="bilinear",
                               align_corners=False, antialias=True)
        mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    def regions(self, images: torch.Tensor, labels: torch.Tensor, *, threshold: float = 0.5,
                imagenet_normalized: bool = True) -> torch.Tensor:
        """Binary ``uint8 [B, H, W]`` regions at the images' own size."""
        images, labels = images.to(self.device), labels.to(self.device)

        def forward():
            clip_input = self.to_clip_input(images, imagenet_normalized)
            embedding = F.normalize(self.model.encode_image(clip_input).float(), dim=-1)
            return self._features, (embedding * self.text[labels]).sum(-1), ()

        _, maps = camal.inspect_attention(forward, tuple(images.shape[-2:]))
        return (maps > threshold).to(torch.uint8).cpu()


class PriorMasks(Dataset):
    """Wraps a (sub)dataset: same images and labels, masks replaced by cached CLIP regions."""

    def __init__(self, base, class_names, *, weights=None, model_name="ViT-B-32", threshold=0.5, cache_dir=None,
                 device="cpu", clip=None, batch_size=32):
        self.base, self.threshold = base, threshold
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._clip = clip
        self._clip_args = (model_name, weights, class_names, device)
        self._memory: dict[int, torch.Tensor] = {}
        root = base.dataset if hasattr(base, "dataset") else base
        self.imagenet_normalized = not isinstance(root, DecoyDigits)
        self.batch_size = batch_size
        self.computed = 0  # regions computed by CLIP (not read from the cache)

    def _key(self, index: int) -> int:
        return int(self.base.indices[index]) if hasattr(self.base, "indices") else int(index)

    @property
    def clip(self) -> ClipGradCAM:
        if self._clip is None:
            model_name, weights, class_names, device = self._clip_args
            model, tokenizer = load_clip(model_name, weights, device)
            self._clip = ClipGradCAM(model, tokenizer, class_names, device=device)
        return self._clip

    def __len__(self):
        return len(self.base)

    def region(self, index: int) -> torch.Tensor:
        key = self._key(index)
        if key in self._memory:
            return self._memory[key]
        path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
        if path is not None and path.exists():
            region = torch.as_tensor(np.load(path))
        else:
            image, _, label = self.base[index]
            region = self.clip.regions(image[None], torch.tensor([label]), threshold=self.threshold,
                                       imagenet_normalized=self.imagenet_normalized)[0]
            self.computed += 1
            self._store(key, region)
            return region
        self._memory[key] = region
        return region

    def precompute(self, progress: bool = False) -> None:
        """Compute every missing region in batches of ``batch_size`` (one CLIP pass each)."""
        from tqdm import tqdm

        missing = [i for i in range(len(self)) if self._key(i) not in self._memory
                   and not (self.cache_dir and (self.cache_dir / f"{self._key(i)}.npy").exists())]
        for start in tqdm(range(0, len(missing), self.batch_size), disable=not progress, desc="CLIP regions"):
            chunk = missing[start : start + self.batch_size]
            items = [self.base[i] for i in chunk]
            regions = self.clip.regions(torch.stack([item[0] for item in items]),
                                        torch.tensor([item[2] for item in items]),
                                        threshold=self.threshold, imagenet_normalized=self.imagenet_normalized)
            for index, region in zip(chunk, regions, strict=True):
                self._store(self._key(index), region)
            self.computed += len(chunk)

    def _store(self, key: int, region: torch.Tensor) -> None:
        self._memory[key] = region
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.cache_dir / f"{key}.npy") as partial:
                np.save(partial, region.numpy())

    def __getitem__(self, index):
        image, _, label = self.base[index]
        return image, self.region(index), label
