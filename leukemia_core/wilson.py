"""The Wilson score interval of a count, and how many cells would settle a threshold.

Example:
    >>> low, high = wilson_interval(0, 20)
    >>> low, round(high, 3)
    (0.0, 0.161)
"""

from __future__ import annotations

import math
import operator
from statistics import NormalDist

_MAX_CELLS_SEARCHED = 1_000_000


def as_count(value: int, name: str) -> int:
    """Returns ``value`` as a non-negative int, or raises a ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number of cells, got the boolean {value!r}.")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a whole number of cells, got {value!r} ({type(value).__name__})."
        ) from None
    if number < 0:
        raise ValueError(f"{name} must be 0 or more, got {number}.")
    return number


def _z_score(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _wilson_bounds(proportion: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval for an observed ``proportion`` of ``n`` trials (n may be any > 0)."""
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (proportion + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(proportion * (1.0 - proportion) / n + z2 / (4.0 * n * n))
    low = 0.0 if proportion <= 0.0 else max(0.0, centre - half)
    high = 1.0 if proportion >= 1.0 else min(1.0, centre + half)
    return low, high


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n``, as proportions in ``[0, 1]``.

    Unlike the textbook ``p +/- 1.96 * se`` interval, it stays inside ``[0, 1]`` and behaves at
    0 and ``n`` successes, which is where blast counts usually are.

    Args:
        k: Successes (e.g. blasts), ``0 <= k <= n``.
        n: Trials (e.g. white cells counted), at least 1.
        confidence: Two-sided confidence level, strictly between 0 and 1.

    Returns:
        ``(low, high)``; ``low`` is exactly 0.0 when ``k == 0`` and ``high`` exactly 1.0 when
        ``k == n``.

    Raises:
        ValueError: ``n`` is 0, ``k`` is outside ``0..n``, or ``confidence`` is outside (0, 1).

    Example:
        >>> low, high = wilson_interval(5, 100)
        >>> round(low, 4), round(high, 4)
        (0.0215, 0.1118)
    """
    k = as_count(k, "k")
    n = as_count(n, "n")
    if n == 0:
        raise ValueError(
            "n is 0: no cells were counted, so there is no proportion and no interval; "
            "count at least one cell."
        )
    if k > n:
        raise ValueError(f"k ({k}) cannot be larger than n ({n}): check the two counts.")
    return _wilson_bounds(k / n, n, _z_score(confidence))


def straddles(low: float, high: float, threshold: float) -> bool:
    """True when ``[low, high]`` neither lies wholly below nor wholly at-or-above ``threshold``."""
    return low < threshold <= high


def cells_needed(
    n_blasts: int, n_counted: int, threshold_percent: float, confidence: float = 0.95
) -> int | None:
    """Total cells needed for the interval to clear a threshold if the proportion stays the same.

    Searches the smallest total ``m >= n_counted`` for which the Wilson interval of the current
    proportion ``n_blasts / n_counted`` over ``m`` cells lies wholly below the threshold or
    wholly at or above it.

    Args:
        n_blasts: Blasts counted so far.
        n_counted: White cells counted so far, at least 1.
        threshold_percent: Threshold in percent, e.g. 5.0 (``counting.INVESTIGATE_PERCENT``).
        confidence: Two-sided confidence level.

    Returns:
        The total number of cells, or None when no count can clear it: the proportion sits
        exactly on the threshold, or more than a million cells would be needed.
    """
    wilson_interval(n_blasts, n_counted, confidence)  # validates the arguments
    z = _z_score(confidence)
    proportion = n_blasts / n_counted
    threshold = threshold_percent / 100.0

    def clears(m: int) -> bool:
        return not straddles(*_wilson_bounds(proportion, m, z), threshold)

    if proportion == threshold:
        return None
    if clears(n_counted):
        return n_counted
    low, high = n_counted, 2 * n_counted
    while not clears(high):  # the interval shrinks around the proportion as m grows
        if high > _MAX_CELLS_SEARCHED:
            return None
        low, high = high, 2 * high
    while high - low > 1:  # invariant: clears(high) and not clears(low)
        middle = (low + high) // 2
        if clears(middle):
            high = middle
        else:
            low = middle
    return high
