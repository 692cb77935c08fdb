"""Deletion and insertion curves (paper section 4.2) and their AUC by the trapezoid rule.

Pixels are ranked by attention. Deletion starts from the image and sets the top-k % most
attended pixels to zero; insertion starts from an all-zero image and restores them. "Zero" is
zero in the model's input space (after normalisation). The curve is the softmax confidence of
the class predicted on the intact image, at k = 0, 1/steps, ..., 1.
"""

from __future__ import annotations

import numpy as np
import torch

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


@torch.no_grad()
def deletion_insertion(model, image: torch.Tensor, attention: torch.Tensor, *, steps: int = 20,
                       target: int | None = None) -> dict:
    """Curves and AUCs for one image ``[C, H, W]`` with attention ``[H, W]``.

    ``model(x)`` returns logits, or ``(logits, features)``.
    """
    def confidences(batch):
        output = model(batch)
        logits = output[0] if isinstance(output, tuple) else output
        return torch.softmax(logits.float(), dim=1)

    if target is None:
        target = int(confidences(image[None]).argmax(1))
    height, width = image.shape[-2:]
    order = torch.argsort(attention.reshape(-1), descending=True, stable=True)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    deleted, inserted = [], []
    for fraction in fractions:
        top = order[: int(round(fraction * height * width))]
        keep = torch.zeros(height * width, dtype=image.dtype, device=image.device)
        keep[top] = 1
        keep = keep.view(1, height, width)
        deleted.append(image * (1 - keep))
        inserted.append(image * keep)
    scores = confidences(torch.stack(deleted + inserted))[:, target].cpu().numpy()
    deletion, insertion = scores[: len(fractions)], scores[len(fractions) :]
    return {
        "fractions": fractions,
        "deletion": deletion,
        "insertion": insertion,
        "deletion_auc": float(_trapezoid(deletion, fractions)),
        "insertion_auc": float(_trapezoid(insertion, fractions)),
        "target": target,
    }


def one_per_class(labels, *, seed: int) -> list[int]:
    """The paper's faithfulness sample: one random test index per class present."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return [int(rng.choice(np.flatnonzero(labels == c))) for c in np.unique(labels)]
