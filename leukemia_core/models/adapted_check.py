"""What an adapted version's own grouped check says (kept in its folder, ``config.json``
``training.adapted.check``), and when that check forbids making it the active model."""

from __future__ import annotations

MIN_CHECK_SAMPLES = 5  # fewer samples cannot tell two versions apart (as promotion's test groups)


def worse_than_before(check: dict) -> list[str]:
    """What the chosen adaptation does worse than the base model on the grouped check, in words
    (empty when balanced accuracy and blast sensitivity did not fall, and ECE and confident
    misses, the error no reviewer sees, did not rise, as printed to 3 decimals: a change in the
    ninth is noise, not "worse").

    >>> worse_than_before({"before": {"balanced_accuracy": 0.8, "ece": 0.1},
    ...                    "after": {"balanced_accuracy": 0.7, "ece": 0.05}})
    ['balanced accuracy 0.800 -> 0.700']
    >>> worse_than_before({"before": {"ece": 0.025227112}, "after": {"ece": 0.025227113}})
    []
    """
    before, after = check["before"], check["after"]
    return [f"{words} {before[key]:.3f} -> {after[key]:.3f}"
            for key, words, sign in (("balanced_accuracy", "balanced accuracy", 1),
                                     ("sensitivity", "blast sensitivity", 1),
                                     ("ece", "ECE", -1),
                                     ("confident_miss_rate", "confident misses", -1))
            if before.get(key) is not None and after.get(key) is not None
            and sign * (round(after[key], 3) - round(before[key], 3)) < 0]  # fmt: skip


def activation_refusals(training: dict) -> list[str]:
    """Why an adapted version (its config's ``training``) must not become the active model:
    its own check says it does worse than its base, or rests on too few samples to say
    anything (a walk made one active that its page called worse). Empty for other models."""
    adapted = training.get("adapted")
    if adapted is None:
        return []
    check = adapted.get("check") if isinstance(adapted, dict) else None
    if not isinstance(check, dict) or not {"before", "after"} <= check.keys():
        return [
            "its folder does not hold the check its adaptation was judged by (damaged or "
            "edited config.json): adapt it again"
        ]  # an adapted version, unvouched for
    refusals = []
    if worse := worse_than_before(check):
        refusals.append(f"its check on the lab's cells says it does worse than its base model "
                        f"({'; '.join(worse)})")  # fmt: skip
    if (samples := check.get("groups")) is not None and samples < MIN_CHECK_SAMPLES:
        refusals.append(f"its check rests on {samples} sample(s), too few to show it helps: "
                        f"adapt with cells of at least {MIN_CHECK_SAMPLES} samples")  # fmt: skip
    return refusals
