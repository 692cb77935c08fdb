"""The regulariser perturbation study (paper Appendix B, Table 4, Figure 9).

A segmentation mask M is perturbed with increasing severity to simulate attention H: shifted
(misalignment), eroded (under-coverage) or dilated (over-coverage). For each image and
perturbation the responses of the CAMAL regulariser ``beta - alpha`` and of the suppress-only
regulariser ``beta`` are recorded, and their Spearman and Pearson correlations with severity
summarised; a one-tailed Wilcoxon test asks whether CAMAL's correlations are higher.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import ndimage, stats

from camal_rl import camal
from camal_rl.files import save_figure
from camal_rl.statistics import wilcoxon_greater

PERTURBATIONS = ("shift", "erode", "dilate")


def blob_masks(count: int, size: int = 224, coverage: tuple[float, float] = (0.25, 0.6),
               seed: int = 0) -> list[np.ndarray]:
    """Generated object masks as large as the paper's data sets' (pets and flowers fill a
    quarter to over half of a 224x224 crop): unions of two or three rotated ellipses around the
    centre, kept when their area falls in ``coverage``. For when the real sets are not on disk."""
    import cv2

    rng = np.random.default_rng(seed)
    masks = []
    while len(masks) < count:
        mask = np.zeros((size, size), np.uint8)
        for _ in range(int(rng.integers(2, 4))):
            centre = (int(size * rng.uniform(0.35, 0.65)), int(size * rng.uniform(0.35, 0.65)))
            axes = (int(size * rng.uniform(0.15, 0.4)), int(size * rng.uniform(0.15, 0.4)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        if coverage[0] <= mask.mean() <= coverage[1]:
            masks.append(mask)
    return masks


def perturb(mask: np.ndarray, kind: str, severity: int) -> np.ndarray:
    """A binary attention map made from ``mask`` by ``severity`` pixels of the perturbation."""
    mask = mask.astype(bool)
    if severity == 0:
        return mask.astype(np.uint8)
    if kind == "shift":  # diagonal shift, what leaves the frame is lost
        return ndimage.shift(mask.astype(np.uint8), (severity, severity), order=0, cval=0)
    if kind == "erode":
        return ndimage.binary_erosion(mask, iterations=severity).astype(np.uint8)
    if kind == "dilate":
        return ndimage.binary_dilation(mask, iterations=severity).astype(np.uint8)
    raise ValueError(f"unknown perturbation {kind!r}; choose one of {PERTURBATIONS}")


def responses(mask: np.ndarray, kind: str, severities) -> tuple[np.ndarray, np.ndarray]:
    """(CAMAL ``beta - alpha``, suppress-only ``beta``) for each severity."""
    attention = torch.as_tensor(np.stack([perturb(mask, kind, s) for s in severities]), dtype=torch.float32)
    masks = torch.as_tensor(np.repeat(mask[None].astype(np.uint8), len(severities), axis=0))
    alpha, beta = camal.alpha_beta(attention, masks)
    return (beta - alpha).numpy(), beta.numpy()


def _correlation(function, x, y) -> float:
    if np.ptp(y) == 0:  # a regulariser that does not respond has no correlation
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(function(x, y)[0])


def study(masks: list[np.ndarray], severities=tuple(range(0, 9))) -> dict:
    """Per perturbation: per-image correlations of each regulariser with severity, and a summary."""
    severities = np.asarray(severities)
    results = {}
    for kind in PERTURBATIONS:
        per_image = {("camal", "spearman"): [], ("camal", "pearson"): [],
                     ("suppress", "spearman"): [], ("suppress", "pearson"): []}
        curves = {"camal": [], "suppress": []}
        for mask in masks:
            if not mask.any() or mask.all():
                continue
            camal_response, suppress_response = responses(mask, kind, severities)
            curves["camal"].append(camal_response)
            curves["suppress"].append(suppress_response)
            for name, response in (("camal", camal_response), ("suppress", suppress_response)):
                per_image[(name, "spearman")].append(_correlation(stats.spearmanr, severities, response))
                per_image[(name, "pearson")].append(_correlation(stats.pearsonr, severities, response))
        summary = {}
        for (name, measure), values in per_image.items():
            values = np.asarray(values, float)
            finite = values[np.isfinite(values)]
            summary[f"{name}_{measure}"] = {
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),  # ddof 1, as in every report
                "images": int(finite.size), "no_response": int(values.size - finite.size),
            }
        for measure in ("spearman", "pearson"):
            a = np.asarray(per_image[("camal", measure)], float)
            b = np.asarray(per_image[("suppress", measure)], float)
            both = np.isfinite(a) & np.isfinite(b)
            differences = a[both] - b[both]
            testable = both.sum() >= 2 and not np.allclose(differences, 0)
            p = wilcoxon_greater(a[both], b[both]) if testable else float("nan")
            summary[f"wilcoxon_{measure}_p"] = p
        results[kind] = {"summary": summary, "curves": {k: np.asarray(v) for k, v in curves.items()},
                         "severities": severities}
    return results


def table(results: dict, dataset: str) -> str:
    """Table 4's layout: Spearman and Pearson, CAMAL vs suppress-only, mean ± std; bold = significant."""
    def cell(summary, key, p):
        entry = summary[key]
        if not np.isfinite(entry["mean"]):
            return "—"
        text = f"{entry['mean']:.2f} ± {entry['std']:.2f}"
        return f"**{text}**" if key.startswith("camal") and np.isfinite(p) and p < 0.05 else text

    lines = ["| Dataset | Perturbation | Spearman CAMAL | Spearman Supp. only | Pearson CAMAL | Pearson Supp. only |",
             "|---|---|---|---|---|---|"]
    for kind in PERTURBATIONS:
        s = results[kind]["summary"]
        sp, pp = s["wilcoxon_spearman_p"], s["wilcoxon_pearson_p"]
        lines.append(f"| {dataset} | {kind.capitalize()} | {cell(s, 'camal_spearman', sp)} "
                     f"| {cell(s, 'suppress_spearman', sp)} "
                     f"| {cell(s, 'camal_pearson', pp)} | {cell(s, 'suppress_pearson', pp)} |")
    return "\n".join(lines)


def figure(results: dict, example_mask: np.ndarray, path, severity: int = 4) -> None:
    """Figure 9-like: per perturbation the mask, the simulated attention and both responses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PERTURBATIONS), 3, figsize=(10, 3 * len(PERTURBATIONS)))
    for row, kind in enumerate(PERTURBATIONS):
        attention = perturb(example_mask, kind, severity)
        overlay = np.zeros(example_mask.shape + (3,))
        overlay[..., 0] = attention & ~example_mask.astype(bool)  # spurious attention
        overlay[..., 1] = attention & example_mask.astype(bool)  # overlap
        overlay[..., 2] = example_mask.astype(bool) & ~attention.astype(bool)  # missed
        axes[row, 0].imshow(example_mask, cmap="gray")
        axes[row, 0].set_title("mask M")
        axes[row, 1].imshow(overlay)
        axes[row, 1].set_title(f"{kind} {severity}px: overlap G, missed B, spurious R", fontsize=8)
        severities = results[kind]["severities"]
        for name, colour in (("camal", "tab:orange"), ("suppress", "tab:blue")):
            curves = results[kind]["curves"][name]
            if len(curves):
                mean, std = curves.mean(0), curves.std(0)
                axes[row, 2].plot(severities, mean, color=colour, label=name)
                axes[row, 2].fill_between(severities, mean - std, mean + std, color=colour, alpha=0.2)
        axes[row, 2].set_xlabel("severity (pixels)")
        axes[row, 2].set_ylabel("response R(M, H)")
        axes[row, 2].legend()
        for ax in axes[row, :2]:
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
