"""Synthetic stained blood-smear fields with a known answer, for tests and the demo.

Cells are drawn as optical densities (Beer-Lambert) over a lit background, so overlapping red
cells darken as on a real slide. Every size is a fraction of the red-cell diameter, and all
randomness comes from ``seed``: the same call gives the same pixels.

Example:
    >>> smear = make_smear(240, 320, n_wbc=2, n_touching_pairs=0, n_rbc=10, seed=1)
    >>> smear.image.shape, len(smear.wbcs), int(smear.cell_labels.max())
    ((240, 320, 3), 2, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from leukemia_core._synthetic_render import (
    _density,
    _photograph,
    _render_discs,
    _render_wbcs,
    _Wbc,
)
from leukemia_core.types import Segmentation

_PARTS = "background rbc platelet blast_nucleus blast_cytoplasm lymphocyte_nucleus"
_PARTS += " lymphocyte_cytoplasm neutrophil_nucleus neutrophil_cytoplasm"
_STAIN_HEX = {  # RGB colours on clean glass, in the order of _PARTS
    "wright": "e2dccf c89896 8c5aaa 7a3ea8 aca8d4 56288a b2b8da 68349a d6c2d4",
    "giemsa": "dcddda bea0ac 7a56b0 6c48ac 98a2d6 482a8c aab8e0 58349e ccbedc",
    "pale": "eeeae4 dec4c0 b28eca a880c6 c0cae6 8e66b6 ced4e8 9870c0 e4d6e2",
}
STAINS: dict[str, dict[str, tuple[int, ...]]] = {
    name: dict(zip(_PARTS.split(), (tuple(bytes.fromhex(c)) for c in hexes.split()), strict=True))
    for name, hexes in _STAIN_HEX.items()
}
"""Colours of each stain by part (``"background"``, ``"rbc"``, ``"blast_nucleus"``, ...)."""

_WBC_SIZE = {"blast": (0.7, 0.95), "lymphocyte": (0.6, 0.72), "neutrophil": (0.8, 1.0)}


@dataclass(frozen=True)
class SyntheticCell:
    """One drawn object and its true geometry.

    Attributes:
        kind: ``"wbc"``, ``"rbc"`` or ``"platelet"``.
        center: ``(x, y)`` in pixels.
        radius_px: Nominal radius of the whole cell.
        nucleus_radius_px: Equal-area radius of a round nucleus, or the radius of the circle
            around the lobes of a lobed one; 0 for red cells and platelets.
        is_blast: True for a blast.
        touches_border: True for the white cell cut by the image edge.
        wbc_type: ``"blast"``, ``"lymphocyte"`` or ``"neutrophil"`` for white cells, else ``""``.
    """

    kind: str
    center: tuple[float, float]
    radius_px: float
    nucleus_radius_px: float = 0.0
    is_blast: bool = False
    touches_border: bool = False
    wbc_type: str = ""


@dataclass(frozen=True)
class SyntheticSmear:
    """A synthetic field and its ground truth.

    Attributes:
        image: ``(H, W, 3)`` RGB uint8.
        cells: White cells first (in label order), then red cells, then platelets.
        red_cell_diameter_px: Nominal red-cell diameter the field was drawn at.
        nucleus_labels: ``(H, W)`` int32; ``k`` marks the nucleus of ``wbcs[k - 1]``.
        cell_labels: ``(H, W)`` int32; ``k`` marks the whole white cell ``wbcs[k - 1]``.
        touching_pairs: Label ids of the white cells drawn touching each other.
        stain: Name of the stain in :data:`STAINS`.
    """

    image: np.ndarray = field(repr=False)
    cells: tuple[SyntheticCell, ...]
    red_cell_diameter_px: float
    nucleus_labels: np.ndarray = field(repr=False)
    cell_labels: np.ndarray = field(repr=False)
    touching_pairs: tuple[tuple[int, int], ...] = ()
    stain: str = "wright"

    @property
    def wbcs(self) -> tuple[SyntheticCell, ...]:
        """White cells in label order (id ``k`` is ``wbcs[k - 1]``)."""
        return tuple(cell for cell in self.cells if cell.kind == "wbc")

    @property
    def border_cell_ids(self) -> tuple[int, ...]:
        """Label ids of the white cells cut by the image edge."""
        return tuple(k for k, cell in enumerate(self.wbcs, start=1) if cell.touches_border)

    def ground_truth(self) -> Segmentation:
        """The true white-cell segmentation, as the record segmentation returns."""
        labels = (self.nucleus_labels, self.cell_labels, self.red_cell_diameter_px)
        return Segmentation(*labels, 1.0, self.border_cell_ids, ("synthetic ground truth",))


def _draw_wbc_shape(rng: np.random.Generator, wbc_type: str, d: float) -> _Wbc:
    """Size, outline and nucleus of one white cell for red-cell diameter ``d``."""
    radius = rng.uniform(*_WBC_SIZE[wbc_type]) * d
    cell = _Wbc(wbc_type, radius, [])
    turn, direction = rng.uniform(0.0, math.pi), rng.uniform(0.0, 2 * math.pi)
    if wbc_type != "neutrophil":  # one round nucleus, larger and more central in blasts
        low, high, shift = (0.8, 0.88, 0.04) if wbc_type == "blast" else (0.62, 0.72, 0.12)
        a = rng.uniform(low, high) * radius
        b = a * rng.uniform(0.92, 1.0)
        offset = min(rng.uniform(0.0, shift) * radius, 0.96 * radius - a)
        x, y = offset * math.cos(direction), offset * math.sin(direction)
        cell.lobes.append((x, y, a, b, turn))
        return cell
    n_lobes, arc = int(rng.integers(2, 5)), rng.uniform(0.3, 0.4) * radius
    a = rng.uniform(0.38, 0.45) * radius
    step = 2.0 * math.asin(min(0.95, 0.6 * a / arc))  # neighbouring lobes overlap
    angles = direction + step * (np.arange(n_lobes) - (n_lobes - 1) / 2.0)
    xs, ys = arc * np.cos(angles), arc * np.sin(angles)
    xs, ys = xs - xs.mean(), ys - ys.mean()
    for x, y, t in zip(xs, ys, angles, strict=True):
        lobe_a = a * rng.uniform(0.9, 1.1)
        tilt = t + math.pi / 2 + rng.uniform(-0.3, 0.3)
        cell.lobes.append((float(x), float(y), lobe_a, lobe_a * rng.uniform(0.6, 0.75), tilt))
    factor = min(1.0, 0.85 * radius / cell.nucleus_radius)
    cell.lobes = [
        (x * factor, y * factor, a * factor, b * factor, t) for x, y, a, b, t in cell.lobes
    ]
    return cell


def _fits(cell: _Wbc, placed: list[_Wbc], gap: float, h: int, w: int) -> bool:
    """Inside the image (unless it is the border cell) and apart from the placed cells."""
    x, y, margin = *cell.center, cell.radius + 3.0
    inside = margin <= x <= w - 1 - margin and margin <= y <= h - 1 - margin
    return (inside or cell.touches_border) and all(
        math.dist(cell.center, other.center) >= cell.radius + other.radius + gap for other in placed
    )


def _place_wbcs(
    rng: np.random.Generator, cells: list[_Wbc], n_pairs: int, h: int, w: int, gap: float
) -> None:
    """Sets every ``center``: touching pairs first, then single cells, then the border cell."""
    units = [cells[2 * i : 2 * i + 2] for i in range(n_pairs)]
    units += [[cell] for cell in cells[2 * n_pairs :]]
    placed: list[_Wbc] = []
    for unit in units:
        first = unit[0]
        for _ in range(2000):
            first.center = tuple(float(v) for v in rng.uniform(0.0, 1.0, 2) * (w - 1, h - 1))
            if first.touches_border:  # centre inside, a third to a half of the cell cut off
                inset = rng.uniform(0.3, 0.6) * first.radius
                x, y = first.center
                sides = [(x, inset), (x, h - 1 - inset), (inset, y), (w - 1 - inset, y)]
                first.center = sides[int(rng.integers(4))]
            if not _fits(first, placed, gap, h, w):
                continue
            if len(unit) == 1:
                break
            second, alpha = unit[1], rng.uniform(0.0, 2 * math.pi)
            distance = 0.95 * (first.radius + second.radius)
            x, y = first.center
            second.center = (x + distance * math.cos(alpha), y + distance * math.sin(alpha))
            if _fits(second, placed, gap, h, w):
                break
        else:
            widest = 2 * max(cell.radius for cell in cells)
            raise ValueError(
                f"Could not place {len(cells)} white cells up to {widest:.0f} px wide in a {w}x{h} "
                "image; use a larger image, fewer white cells or a smaller red_cell_diameter_px."
            )
        placed += unit


def _scatter(
    rng: np.random.Generator, radii: np.ndarray, h: int, w: int, rules: list, spill: float
) -> np.ndarray:
    """Random centres keeping ``dist >= a * R + b * r`` from each group ``(centres, R, a, b)``.

    A group with centres None stands for the points placed so far. ``spill`` is how far (in
    radii) a centre may lie outside the image; when no candidate fits, the best one is taken.
    """
    centres = np.zeros((len(radii), 2))
    for i, r in enumerate(radii):
        lo = (-spill * r, -spill * r)
        candidates = rng.uniform(lo, (w - 1 - lo[0], h - 1 - lo[1]), size=(48, 2))
        slack = np.full(len(candidates), np.inf)
        for pts, big, a, b in rules:
            pts, big = (centres[:i], radii[:i]) if pts is None else (pts, big)
            if len(pts):
                dist = np.hypot(candidates[:, :1] - pts[:, 0], candidates[:, 1:] - pts[:, 1])
                slack = np.minimum(slack, (dist / (a * big + b * r)).min(axis=1))
        good = np.flatnonzero(slack >= 1.0)
        centres[i] = candidates[good[0] if good.size else int(np.argmax(slack))]
    return centres


def make_smear(
    height: int = 480,
    width: int = 640,
    *,
    n_wbc: int = 4,
    n_touching_pairs: int = 1,
    n_rbc: int = 60,
    n_platelets: int = 6,
    red_cell_diameter_px: float = 40.0,
    stain: str = "wright",
    blast_fraction: float = 0.5,
    border_wbc: bool = False,
    seed: int = 0,
) -> SyntheticSmear:
    """Draws a stained peripheral-blood field with known white-cell masks.

    White cells (1.2-2.0 red-cell diameters) are blasts (large round nucleus, fine chromatin,
    nucleoli, scant blue cytoplasm), lymphocytes or neutrophils (2-4 lobes); they touch only in
    touching pairs (cytoplasm overlapping ~5%, nuclei apart). Red cells may overlap each other
    and the rim of white cells.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        n_wbc: White cells inside the image, touching pairs included.
        n_touching_pairs: Pairs among ``n_wbc`` drawn touching; ``2 * n_touching_pairs <= n_wbc``.
        n_rbc: Red cells (some may be cut by the image edge).
        n_platelets: Platelets.
        red_cell_diameter_px: Red-cell diameter; every size scales with it.
        stain: A name in :data:`STAINS` (``"wright"``, ``"giemsa"``, ``"pale"``).
        blast_fraction: Share of the ``n_wbc`` cells that are blasts (rounded to a count).
        border_wbc: Adds one extra white cell cut by the image edge (``touches_border=True``).
        seed: Seed of every random choice.

    Raises:
        ValueError: An argument is out of range, or the white cells do not fit in the image.
    """
    counts = [("n_wbc", n_wbc), ("n_touching_pairs", n_touching_pairs), ("n_rbc", n_rbc)]
    counts.append(("n_platelets", n_platelets))
    problems = [
        f"{name} must be a whole number of 0 or more, got {value!r}"
        for name, value in counts
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0
    ]
    for name, value, low, high in [
        ("height", height, 32, 10_000),
        ("width", width, 32, 10_000),
        ("red_cell_diameter_px", red_cell_diameter_px, 6, 200),
        ("blast_fraction", blast_fraction, 0, 1),
    ]:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            problems.append(f"{name} must be a number, got {value!r}")
        elif not low <= value <= high:
            problems.append(f"{name} must be between {low} and {high}, got {value!r}")
    if stain not in STAINS:
        problems.append(f"stain must be one of {', '.join(STAINS)}, got {stain!r}")
    if not problems and 2 * n_touching_pairs > n_wbc:
        problems.append(f"{n_touching_pairs} touching pairs need n_wbc >= {2 * n_touching_pairs}")
    if problems:
        raise ValueError("; ".join(problems) + ".")
    h, w, d = int(height), int(width), float(red_cell_diameter_px)
    seeds = np.random.SeedSequence(seed).spawn(3)
    shape_rng, place_rng, paint_rng = (np.random.default_rng(s) for s in seeds)
    # Sizes come from their own stream, so the same seed at another scale gives scaled cells.
    flags = list(shape_rng.permutation(n_wbc) < round(blast_fraction * n_wbc))
    flags += [shape_rng.random() < blast_fraction] if border_wbc else []
    normal = ["lymphocyte" if shape_rng.random() < 0.5 else "neutrophil" for _ in flags]
    wbcs = [
        _draw_wbc_shape(shape_rng, "blast" if blast else kind, d)
        for blast, kind in zip(flags, normal, strict=True)
    ]
    if border_wbc:
        wbcs[-1].touches_border = True
    rbc_radii = 0.5 * d * shape_rng.uniform(0.9, 1.1, n_rbc)
    platelet_radii = d * shape_rng.uniform(0.1, 0.15, n_platelets)

    _place_wbcs(place_rng, wbcs, n_touching_pairs, h, w, gap=max(4.0, 0.15 * d))
    wbc_centres = np.array([c.center for c in wbcs], float).reshape(-1, 2)
    wbc_reach = np.array([c.radius for c in wbcs], float)
    rbc_rules = [(wbc_centres, wbc_reach, 1.0, 0.8), (None, None, 0.8, 0.8)]
    rbc_centres = _scatter(place_rng, rbc_radii, h, w, rbc_rules, spill=0.3)
    platelet_rules = [(wbc_centres, wbc_reach, 1.0, 2.0), (rbc_centres, rbc_radii, 1.0, 1.5)]
    platelet_rules.append((None, None, 2.0, 2.0))
    platelet_centres = _scatter(place_rng, platelet_radii, h, w, platelet_rules, spill=-1.0)

    colours = STAINS[stain]
    tint = paint_rng.uniform(0.92, 1.08) * paint_rng.uniform(0.96, 1.04, 3).astype(np.float32)
    od = np.zeros((h, w, 3), np.float32)
    _render_discs(od, rbc_centres, rbc_radii, tint * _density(colours, "rbc"), "rbc", paint_rng)
    platelet_density = tint * _density(colours, "platelet")
    _render_discs(od, platelet_centres, platelet_radii, platelet_density, "platelet", paint_rng)
    cell_labels, nucleus_labels = _render_wbcs(od, wbcs, colours, d, paint_rng)
    image = _photograph(od, colours["background"], d, paint_rng)

    cells = [
        SyntheticCell(
            "wbc", c.center, c.radius, c.nucleus_radius, bool(b), c.touches_border, c.wbc_type
        )
        for c, b in zip(wbcs, flags, strict=True)
    ]
    for kind, centres, radii in [
        ("rbc", rbc_centres, rbc_radii),
        ("platelet", platelet_centres, platelet_radii),
    ]:
        cells += [
            SyntheticCell(kind, (x, y), r)
            for (x, y), r in zip(centres.tolist(), radii.tolist(), strict=True)
        ]
    pairs = tuple((2 * i + 1, 2 * i + 2) for i in range(n_touching_pairs))
    return SyntheticSmear(image, tuple(cells), d, nucleus_labels, cell_labels, pairs, stain)


def make_demo_smear() -> SyntheticSmear:
    """A 1024x768 Wright-stained field with 8 white cells (half blasts) for the app's demo."""
    counts = {"n_wbc": 8, "n_touching_pairs": 1, "n_rbc": 300, "n_platelets": 12}
    return make_smear(768, 1024, red_cell_diameter_px=34.0, border_wbc=True, seed=7, **counts)
