"""Regulariser perturbation study (paper Appendix B, Table 4, Figure 9) on a data set's masks.

Usage: python scripts/regularizer_study.py [--dataset decoy_digits|oxford_pets|flowers102|busi]
       [--data-root DIR] [--images 200] [--max-severity 8] [--out reports/regularizer_study]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from camal_rl.vision import data, perturbation

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="decoy_digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--max-severity", type=int, default=8)
    parser.add_argument("--out", default="reports/regularizer_study")
    args = parser.parse_args()
    if args.dataset == "decoy_digits":  # larger digits than the training default: room to erode
        dataset = data.DecoyDigits(canvas=64, digit_scale=4)
    else:
        dataset = data.load_dataset(args.dataset, args.data_root)
    picks = np.random.default_rng(0).choice(len(dataset), size=min(args.images, len(dataset)), replace=False)
    masks = [dataset[int(i)][1].numpy() for i in picks]
    results = perturbation.study(masks, severities=range(0, args.max_severity + 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = perturbation.table(results, args.dataset)
    print(text)
    for kind in perturbation.PERTURBATIONS:
        s = results[kind]["summary"]
        print(f"{kind}: one-tailed Wilcoxon CAMAL > suppress-only, Spearman p={s['wilcoxon_spearman_p']:.3g}, "
              f"Pearson p={s['wilcoxon_pearson_p']:.3g}; suppress-only did not respond on "
              f"{s['suppress_spearman']['no_response']} of {len(masks)} images")
    perturbation.figure(results, next(m for m in masks if m.any()), out / "figure9.png")
    (out / "table4.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({k: v["summary"] for k, v in results.items()}, indent=2))
    print(f"wrote {out / 'table4.md'} and {out / 'figure9.png'}")
