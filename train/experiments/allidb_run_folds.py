"""A model's recipe on ALL-IDB smear runs it never saw: two "run-fold" twins of the model.

v1's and v2's splits put one ALL-IDB1 smear run (one look, numbered in a row, very likely one
patient) on two sides, so their ALL-IDB held-out figures were withdrawn. ALL-IDB1 holds four
runs here, two ALL and two healthy: too few to hold one of each out of a bundled model without
halving its ALL-IDB training. So the recipe is measured on twins: twin ``i`` is trained with
the same settings and the same split of every other source as the model, but with ALL runs
``i::2`` and healthy runs ``i::2`` held out for test (no ALL-IDB validation side), then
``train.evaluate smears|cells --held-out`` scores it. Between them every ALL-IDB1 field and
ALL-IDB2 crop is tested once by a model that never saw its run. Prints one JSON object::

    python -m train.experiments.allidb_run_folds --data cache/bank/manifest.csv \\
        --like lite0_blast_v2 --all-idb1 ../shared/data/all_idb1 \\
        --all-idb2 ../shared/data/all_idb2 --out runs/run_folds

About 10 minutes for both twins on 2 CPU cores (the bundled recipe: head on cached
features). Each twin's threshold and review band come from the recipe's rule on its own
validation side, which holds no ALL-IDB cell: they are printed beside its figures, as the
operating-point figures (precision, confident misses) depend on them and AUROC does not.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from leukemia_core.models.folder import models_dir, read_config
from train.data import BLAST, load_dataset
from train.splits import read_split_file, units_of

ALLIDB = ("allidb1", "allidb2")


def run_folds(records, base_sides: dict[str, str], folds: int = 2) -> list[dict[str, str]]:
    """Group -> side for each twin: the base split for every other source; ALL-IDB units
    (smear runs) dealt to test by class, ``i::folds`` of each class's runs in run order."""
    unit_of = units_of(records)
    has_blast: dict[str, bool] = {}
    for r in records:
        if r.source in ALLIDB:
            has_blast[unit_of[r.group]] = has_blast.get(unit_of[r.group], False) or (
                r.label == BLAST
            )
    runs = {kind: sorted(u for u, b in has_blast.items() if b is kind) for kind in (True, False)}
    if min(len(r) for r in runs.values()) < folds:
        raise SystemExit(f"ALL-IDB holds {len(runs[True])} ALL and {len(runs[False])} healthy "
                         f"run(s): too few for {folds} run folds.")  # fmt: skip
    twins = []
    for i in range(folds):
        held = {u for kind in runs.values() for u in kind[i::folds]}
        sides = {g: s for g, s in base_sides.items() if not g.startswith(ALLIDB)}
        for group, unit in unit_of.items():
            if group.startswith(ALLIDB):
                sides[group] = "test" if unit in held else "train"
        twins.append(sides)
    return twins


def recipe_arguments(fit: dict) -> list[str]:
    """``train fit`` options repeating a model's recorded recipe (config ``training.fit``)."""
    args = ["--architecture", fit["architecture"], "--input-size", str(fit["input_size"]),
            "--epochs", str(fit["epochs"]), "--patience", str(fit["patience"]),
            "--batch-size", str(fit["batch_size"]), "--lr", str(fit["learning_rate"]),
            "--balance", fit["balance"], "--seed", str(fit["seed"]),
            "--stain-normalisation", fit["stain_normalisation"],
            "--threshold-rule", fit["threshold_rule"],
            "--test-time-views", str(fit["test_time_views"])]  # fmt: skip
    if fit.get("weights") not in (None, "imagenet"):
        raise SystemExit(f"the model started from weights {fit['weights']!r}: give them to "
                         "train fit by hand; this script repeats ImageNet-started recipes")  # fmt: skip
    args += ["--weights", "imagenet" if fit.get("weights") else "none",
             "--fine-tune-epochs", str(fit.get("fine_tune_epochs", 0)),
             "--fine-tune-layers", str(fit.get("fine_tune_layers", 30))]  # fmt: skip
    if fit.get("cached_features"):
        args += ["--cached-features", "--feature-views", str(fit["feature_views"])]
    if fit.get("augment", True):
        args += ["--augmentations", *fit["augmentations"]]
    else:
        args.append("--no-augment")
    return args


def _run(command: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:2])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def pooled(smears: list[dict]) -> dict:
    """Blast precision, recall and F1 of every twin's held-out fields counted together."""
    hits = sum(round((s["blast_recall"] or 0) * s["n_expert_blasts"]) for s in smears)
    experts = sum(s["n_expert_blasts"] for s in smears)
    called = sum(s["n_predicted_blasts"] for s in smears)
    return {"blast_precision": hits / called if called else None,
            "blast_recall": hits / experts if experts else None,
            "blast_f1": 2 * hits / (experts + called) if experts + called else None,
            "n_expert_blasts": experts, "n_fields": sum(s["n_fields"] for s in smears)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="crop bank manifest.csv")
    parser.add_argument("--like", required=True, help="model whose recipe and split to repeat")
    parser.add_argument("--all-idb1", type=Path, required=True)
    parser.add_argument("--all-idb2", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the twins")
    args = parser.parse_args(argv)
    root = models_dir()
    fit = read_config(args.like, root).training["fit"]
    records = list(load_dataset(args.data).records)
    base = read_split_file(root / args.like / "split.csv")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"like": args.like, "twins": []}
    for i, sides in enumerate(run_folds(records, base)):
        name, split = f"run_fold_{i + 1}", args.out / f"split_{i + 1}.csv"
        with split.open("w", newline="") as f:
            csv.writer(f).writerows([("group", "side"), *sorted(sides.items())])
        _run(["train", "fit", "--data", str(args.data), *recipe_arguments(fit),
              "--split-from", str(split), "--models-dir", str(args.out), "--name", name,
              "--checkpoints", str(args.out / f"ckpt_{i + 1}")])  # fmt: skip
        where = ["--model", name, "--models-dir", str(args.out), "--held-out"]
        smears = ["train.evaluate", "smears", "--all-idb1", str(args.all_idb1), *where]
        crops = ["train.evaluate", "cells", "--data", str(args.all_idb2), "--format", "allidb2"]
        metrics = json.loads((args.out / name / "metrics.json").read_text())
        held = sorted(g for g, s in sides.items() if s == "test" and g.startswith(ALLIDB))
        calibration = json.loads((args.out / name / "config.json").read_text())["calibration"]
        result["twins"].append({"name": name, "held_out_groups": held,
                                "calibration": calibration,
                                "smears": _run(smears), "allidb2": _run([*crops, *where]),
                                "test_per_source": metrics["test_per_source"]})  # fmt: skip
    result["pooled_smears"] = pooled([t["smears"] for t in result["twins"]])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
