"""A model's recipe on ALL-IDB smear runs it never saw: two "run-fold" twins of the model.

v1's and v2's splits put ALL-IDB1 smear runs (one look, numbered in a row, very likely one
patient each) on two or three sides, so their ALL-IDB held-out figures were withdrawn. ALL-IDB1 holds four
runs here, two ALL and two healthy: too few to hold one of each out of a bundled model without
halving its ALL-IDB training. So the recipe is measured on twins: twin ``i`` is trained with
the same settings and the same split of every other source as the model, but with ALL runs
``i::2`` and healthy runs ``i::2`` held out for test (no ALL-IDB validation side), then
``train.evaluate smears|cells --held-out`` scores it. Between them every ALL-IDB1 field and
ALL-IDB2 crop is tested once by a model that never saw its run; ``--pairing 1`` pairs each
ALL run with the other healthy run. Each twin is scored at its own operating point (threshold
and band from the recipe's rule on its validation side, which holds no ALL-IDB cell) and, on a
copy with the modelled model's calibration, at that model's. A twin already in ``--out`` with
the same split is scored again, not retrained. Prints one JSON object::

    python -m train.experiments.allidb_run_folds --data cache/bank/manifest.csv \\
        --like lite0_blast_v2 --all-idb1 ../shared/data/all_idb1 \\
        --all-idb2 ../shared/data/all_idb2 --out runs/run_folds [--pairing 1]

About 10 minutes for both twins on 2 CPU cores (the bundled recipe: head on cached
features), 3 minutes to score them again.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from leukemia_core.models.folder import models_dir, read_config
from train.data import load_dataset
from train.splits import read_split_file, units_of, units_with_blasts

ALLIDB = ("allidb1", "allidb2")


def run_folds(
    records, base_sides: dict[str, str], folds: int = 2, shift: int = 0
) -> list[dict[str, str]]:
    """Group -> side for each twin: the base split for every other source; ALL-IDB units
    (smear runs) dealt to test by class, ALL runs ``i::folds`` with healthy runs
    ``(i + shift)::folds`` in run order (``shift=1`` pairs them the other way round)."""
    unit_of = units_of(records)
    idb = [r for r in records if r.source in ALLIDB]
    runs = dict(zip((True, False), units_with_blasts(idb, unit_of), strict=True))
    if min(len(r) for r in runs.values()) < folds:
        raise SystemExit(f"ALL-IDB holds {len(runs[True])} ALL and {len(runs[False])} healthy "
                         f"run(s): too few for {folds} run folds.")  # fmt: skip
    twins = []
    for i in range(folds):
        held = set(runs[True][i::folds]) | set(runs[False][(i + shift) % folds :: folds])
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


def _run(command: list[str], json_out: bool = True) -> dict:
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:2])} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout) if json_out else {}


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
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the twins (a twin already there is scored, not retrained)",
    )
    parser.add_argument(
        "--pairing",
        type=int,
        choices=(0, 1),
        default=0,
        help="1: pair each ALL run with the other healthy run",
    )
    args = parser.parse_args(argv)
    root = models_dir()
    like = read_config(args.like, root)
    fit = like.training["fit"]
    records = list(load_dataset(args.data).records)
    base = read_split_file(root / args.like / "split.csv")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"like": args.like, "twins": []}
    like_calibration = like.calibration.to_dict()
    present = {r.group for r in records}
    for i, sides in enumerate(run_folds(records, base, shift=args.pairing)):
        name, split = f"run_fold_{i + 1}", args.out / f"split_{i + 1}.csv"
        with split.open("w", newline="") as f:
            csv.writer(f).writerows([("group", "side"), *sorted(sides.items())])
        twin_split = args.out / name / "split.csv"
        wanted = {g: side for g, side in sides.items() if g in present}
        if not twin_split.is_file() or read_split_file(twin_split) != wanted:
            shutil.rmtree(args.out / name, ignore_errors=True)  # none yet, or another pairing's
            _run(["train", "fit", "--data", str(args.data), *recipe_arguments(fit),
                  "--split-from", str(split), "--models-dir", str(args.out), "--name", name,
                  "--checkpoints", str(args.out / f"ckpt_{i + 1}")])  # fmt: skip
        # The same weights at the modelled model's operating point: a copy, calibration swapped.
        at_like = f"{name}_at_{args.like}"
        shutil.rmtree(args.out / at_like, ignore_errors=True)
        shutil.copytree(args.out / name, args.out / at_like)
        config_path = args.out / at_like / "config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "calibration": like_calibration}, indent=2))
        _run(["train", "seal", at_like, "--models-dir", str(args.out)], json_out=False)
        metrics = json.loads((args.out / name / "metrics.json").read_text())
        held = sorted(g for g, s in sides.items() if s == "test" and g.startswith(ALLIDB))
        twin = {"name": name, "held_out_groups": held,
                "calibration": json.loads((args.out / name / "config.json").read_text())[
                    "calibration"], "test_per_source": metrics["test_per_source"]}  # fmt: skip
        for key, model in (("own", name), (f"at_{args.like}", at_like)):
            where = ["--model", model, "--models-dir", str(args.out), "--held-out"]
            twin[key] = {
                "smears": _run(["train.evaluate", "smears", "--all-idb1", str(args.all_idb1),
                                *where]),
                "allidb2": _run(["train.evaluate", "cells", "--data", str(args.all_idb2),
                                 "--format", "allidb2", *where]),
            }  # fmt: skip
        result["twins"].append(twin)
    result["pooled_smears"] = pooled([t["own"]["smears"] for t in result["twins"]])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
