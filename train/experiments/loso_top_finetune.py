"""Does fine-tuning the backbone's top help a left-out source? A CPU-sized LOSO experiment.

For one leave-one-source-out fold of a crop bank, the backbone runs once up to ``--cut`` on
each training cell (``--views`` augmented views) and on the validation and left-out cells.
Phase one trains the head alone on those activations (the bundled recipe: frozen backbone);
phase two also trains every layer after the cut, BatchNorm frozen, one epoch at a time. After
each, it prints one JSON line: AUROC and sensitivity at 90% specificity on the validation
groups (what a recipe may be chosen by) and on the left-out source (what it must not be
chosen by). A GPU job would fine-tune deeper; this measures the top on 2 CPU cores::

    python -m train.experiments.loso_top_finetune --data cache/bank/manifest.csv \
        --left-out deepapl --cut block6d_add --epochs 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from leukemia_core.calibration import BLAST_INDEX
from leukemia_core.models.architectures import build_classifier
from train.batches import balanced_indices
from train.data import load_manifest
from train.evaluate.metrics import auroc, sensitivity_at_specificity
from train.fit import FitConfig, labels_of, load_crops
from train.head import backbone_features
from train.splits import SplitResult, leave_one_source_out


def top_of(model: keras.Model, cut: str) -> tuple[keras.Model, list[keras.layers.Layer]]:
    """The layers after ``cut`` as a model on its activations, sharing the model's weights.

    Raises:
        ValueError: Unknown layer, or a residual ``Add`` after the cut (the top must be a chain).
    """
    names = [layer.name for layer in model.layers]
    if cut not in names:
        raise ValueError(f"No layer {cut!r} in {model.name}; e.g. block6d_add, block7a_project_bn.")
    layers = model.layers[names.index(cut) + 1 :]
    if any(isinstance(layer, keras.layers.Add) for layer in layers):
        raise ValueError(f"A residual connection follows {cut!r}: cut at a later block's input.")
    inputs = keras.Input(model.get_layer(cut).output.shape[1:])
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x), layers


def figures(top: keras.Model, x: np.ndarray, labels: np.ndarray) -> dict:
    """AUROC and sensitivity at 90% specificity of the top's blast probability."""
    p = top.predict(x, batch_size=256, verbose=0)[:, BLAST_INDEX]
    is_blast = labels == BLAST_INDEX
    return {
        "auroc": auroc(is_blast, p),
        "sens_at_spec_0.90": sensitivity_at_specificity(is_blast, p),
    }


def fold_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every LOSO-fold experiment takes: the crop bank and the source left out."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="crop-bank manifest.csv")
    parser.add_argument("--left-out", required=True, help="source unit (or part of its name)")
    return parser


def left_out_fold(data: Path, left_out: str) -> tuple[str, SplitResult]:
    """``(unit, split)`` of the leave-one-source-out fold whose unit names ``left_out``."""
    folds = dict(leave_one_source_out(load_manifest(data).records))
    unit = next(u for u in folds if left_out in u)
    return unit, folds[unit]


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__)
    parser.add_argument("--cut", default="block6d_add", help="train the layers after this one")
    parser.add_argument("--views", type=int, default=4, help="views per training cell")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of phase two")
    parser.add_argument("--rate", type=float, default=1e-4, help="Adam rate of phase two")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    unit, split = left_out_fold(args.data, args.left_out)
    config = FitConfig(architecture="efficientnet_lite0", input_size=224, cached_features=True)
    keras.utils.set_random_seed(0)
    model = build_classifier(config.architecture, input_size=config.size, weights="imagenet")
    sides = {s: getattr(split, s) for s in ("train", "val", "test")}
    y = {s: labels_of(r) for s, r in sides.items()}
    x = {s: backbone_features(model, load_crops(r, config.input_spec), config,
                              views=args.views if s == "train" else 1,
                              layer=args.cut).astype(np.float16)  # half the memory
         for s, r in sides.items()}  # fmt: skip
    train_x = x["train"].reshape(-1, *x["train"].shape[2:])
    train_y = np.tile(y["train"], args.views)
    order = balanced_indices(train_y, np.random.default_rng(0))  # classes oversampled
    top, layers = top_of(model, args.cut)

    def report(phase: str) -> None:
        row = {"left_out": unit, "cut": args.cut, "phase": phase,
               "validation": figures(top, x["val"][0], y["val"]),
               "left_out_source": figures(top, x["test"][0], y["test"]),
               "seconds": round(time.perf_counter() - start)}  # fmt: skip
        print(json.dumps(row), flush=True)

    for layer in layers:
        layer.trainable = layer.name == "logits"
    top.compile(keras.optimizers.Adamax(1e-3), "sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping("val_loss", patience=8, restore_best_weights=True)
    top.fit(train_x[order], train_y[order], batch_size=40, epochs=60, callbacks=[stop],
            validation_data=(x["val"][0], y["val"]), verbose=0)  # fmt: skip
    report("head")
    for layer in layers:  # frozen BatchNorm statistics, as train.fit's fine-tuning phase
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    top.compile(keras.optimizers.Adam(args.rate), "sparse_categorical_crossentropy")
    for epoch in range(args.epochs):
        top.fit(train_x[order], train_y[order], batch_size=40, epochs=1, verbose=0)
        report(f"top epoch {epoch + 1}")


if __name__ == "__main__":
    main()
