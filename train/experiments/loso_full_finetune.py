"""Does fine-tuning the whole backbone help a left-out source? One LOSO fold on 2 CPU cores.

For one leave-one-source-out fold of a crop bank, trains the bundled recipe (head on cached
frozen-backbone features), then fine-tunes every layer but BatchNorm on augmented crops, as
``python -m train fit --fine-tune-layers 1000`` does, and prints one JSON line per phase:
AUROC, sensitivity at 90% specificity and specificity at the 0.5 point on the validation
groups (what a recipe may be chosen by) and on the left-out source (what it must not be
chosen by). Phase two keeps its best-validation weights, as ``train fit`` does::

    python -m train.experiments.loso_full_finetune --data cache/bank/manifest.csv \
        --left-out deepapl --epochs 6
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np

from leukemia_core.calibration import BLAST_INDEX, blast_probability
from leukemia_core.models.architectures import build_classifier
from train.batches import balancing_strata
from train.evaluate.metrics import auroc, sensitivity_at_specificity
from train.experiments.loso_top_finetune import fold_parser, left_out_fold
from train.fit import (
    FitConfig,
    _fit_phase,
    _set_backbone_trainable,
    labels_of,
    load_crops,
    predict_logits,
)
from train.head import fit_cached


def figures(model: keras.Model, images: np.ndarray, labels: np.ndarray, config) -> dict:
    """AUROC, sensitivity at 90% specificity and specificity at p = 0.5 (uncalibrated)."""
    p = blast_probability(predict_logits(model, images, config))
    is_blast = labels == BLAST_INDEX
    normal = ~is_blast
    return {
        "auroc": auroc(is_blast, p) if is_blast.any() and normal.any() else None,
        "sens_at_spec_0.90": sensitivity_at_specificity(is_blast, p)
        if is_blast.any() and normal.any()
        else None,
        "specificity_0.5": float(np.mean(p[normal] < 0.5)) if normal.any() else None,
        "sensitivity_0.5": float(np.mean(p[is_blast] >= 0.5)) if is_blast.any() else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the fine-tuning phase")
    parser.add_argument("--rate", type=float, default=1e-4, help="Adamax rate of phase two")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    unit, split = left_out_fold(args.data, args.left_out)
    config = FitConfig(architecture="efficientnet_lite0", input_size=224, cached_features=True,
                       feature_views=4, epochs=60, patience=8, balance="oversample",
                       fine_tune_epochs=args.epochs, fine_tune_layers=1000,
                       fine_tune_learning_rate=args.rate)  # fmt: skip
    keras.utils.set_random_seed(config.seed)
    model = build_classifier(config.architecture, input_size=config.size, weights="imagenet")
    images = {s: load_crops(getattr(split, s), config.input_spec) for s in ("train", "val", "test")}
    labels = {s: labels_of(getattr(split, s)) for s in ("train", "val", "test")}
    strata = balancing_strata(labels["train"], [r.source for r in split.train], config.balance)
    data = (images["train"], labels["train"], images["val"], labels["val"], strata)

    def report(phase: str) -> None:
        row = {"left_out": unit, "phase": phase,
               "validation": figures(model, images["val"], labels["val"], config),
               "left_out_source": figures(model, images["test"], labels["test"], config),
               "seconds": round(time.perf_counter() - start)}  # fmt: skip
        print(json.dumps(row), flush=True)

    fit_cached(model, data, config, None)
    report("head on frozen features")
    _set_backbone_trainable(model, config.fine_tune_layers)
    _fit_phase(model, data, config, "fine_tune", args.epochs, args.rate, None, None)
    report(f"whole backbone fine-tuned, {args.epochs} epochs, best validation loss kept")


if __name__ == "__main__":
    main()
