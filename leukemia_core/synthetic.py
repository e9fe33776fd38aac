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

import cv2
import numpy as np

from leukemia_core.types import Segmentation

_PARTS = ("background", "rbc", "platelet", "blast_nucleus", "blast_cytoplasm")
_PARTS += ("lymphocyte_nucleus", "lymphocyte_cytoplasm", "neutrophil_nucleus")
_PARTS += ("neutrophil_cytoplasm",)
_STAIN_HEX = {  # RGB colours on clean glass, in the order of _PARTS
    "wright": "e2dccf c89896 8c5aaa 7a3ea8 aca8d4 56288a b2b8da 68349a d6c2d4",
    "giemsa": "dcddda bea0ac 7a56b0 6c48ac 98a2d6 482a8c aab8e0 58349e ccbedc",
    "pale": "eeeae4 dec4c0 b28eca a880c6 c0cae6 8e66b6 ced4e8 9870c0 e4d6e2",
}
STAINS: dict[str, dict[str, tuple[int, ...]]] = {
    name: dict(zip(_PARTS, (tuple(bytes.fromhex(c)) for c in colours.split()), strict=True))
    for name, colours in _STAIN_HEX.items()
}
"""Colours of each stain by part (``"background"``, ``"rbc"``, ``"blast_nucleus"``, ...)."""

_WBC_SIZE = {"blast": (0.7, 0.95), "lymphocyte": (0.6, 0.72), "neutrophil": (0.8, 1.0)}
_CHROMATIN = {"blast": (0.025, 0.10), "lymphocyte": (0.05, 0.22), "neutrophil": (0.04, 0.18)}


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
        return Segmentation(
            nucleus_labels=self.nucleus_labels,
            cell_labels=self.cell_labels,
            red_cell_diameter_px=self.red_cell_diameter_px,
            working_scale=1.0,
            border_cell_ids=self.border_cell_ids,
            notes=("synthetic ground truth",),
        )


@dataclass
class _Wbc:
    """One white cell in pixels; the nucleus is a union of ellipses ``(x, y, a, b, angle)``."""

    wbc_type: str
    radius: float
    ellipticity: float
    angle: float
    lobes: list[tuple[float, float, float, float, float]]
    center: tuple[float, float] = (0.0, 0.0)
    touches_border: bool = False

    def edge(self, theta: np.ndarray | float) -> np.ndarray | float:
        return self.radius * (1.0 + self.ellipticity * np.cos(2.0 * (theta - self.angle)))

    @property
    def reach(self) -> float:
        return self.radius * (1.0 + self.ellipticity)

    @property
    def nucleus_radius(self) -> float:
        if len(self.lobes) == 1:
            return math.sqrt(self.lobes[0][2] * self.lobes[0][3])
        return max(math.hypot(x, y) + a for x, y, a, _, _ in self.lobes)


def _draw_wbc_shape(rng: np.random.Generator, wbc_type: str, d: float) -> _Wbc:
    """Size, outline and nucleus of one white cell for red-cell diameter ``d``."""
    radius, ellipticity = rng.uniform(*_WBC_SIZE[wbc_type]) * d, rng.uniform(0.0, 0.05)
    cell = _Wbc(wbc_type, radius, ellipticity, rng.uniform(0.0, math.pi), [])
    inner = radius * (1.0 - ellipticity)
    turn, direction = rng.uniform(0.0, math.pi), rng.uniform(0.0, 2 * math.pi)
    if wbc_type != "neutrophil":  # one round nucleus, larger and more central in blasts
        low, high, shift = (0.78, 0.87, 0.04) if wbc_type == "blast" else (0.68, 0.78, 0.12)
        a = rng.uniform(low, high) * inner
        b = a * rng.uniform(0.92, 1.0)
        offset = min(rng.uniform(0.0, shift) * radius, 0.96 * inner - a)
        x, y = offset * math.cos(direction), offset * math.sin(direction)
        cell.lobes.append((x, y, a, b, turn))
        return cell
    n_lobes, arc = int(rng.integers(2, 5)), rng.uniform(0.3, 0.4) * radius
    a = rng.uniform(0.3, 0.36) * radius
    step = 2.0 * math.asin(min(0.95, 0.72 * a / arc))  # neighbouring lobes overlap
    angles = direction + step * (np.arange(n_lobes) - (n_lobes - 1) / 2.0)
    xs, ys = arc * np.cos(angles), arc * np.sin(angles)
    xs, ys = xs - xs.mean(), ys - ys.mean()
    for x, y, t in zip(xs, ys, angles, strict=True):
        lobe_a = a * rng.uniform(0.9, 1.1)
        tilt = t + math.pi / 2 + rng.uniform(-0.3, 0.3)
        cell.lobes.append((float(x), float(y), lobe_a, lobe_a * rng.uniform(0.7, 0.85), tilt))
    factor = min(1.0, 0.85 * inner / cell.nucleus_radius)
    cell.lobes = [
        (x * factor, y * factor, a * factor, b * factor, t) for x, y, a, b, t in cell.lobes
    ]
    return cell


def _density(stain: dict, part: str) -> np.ndarray:
    """Optical density per channel of a stained part, relative to the background."""
    return np.log(np.float32(stain["background"]) / np.float32(stain[part]))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), max(sigma, 0.3))
    return noise / (float(noise.std()) + 1e-6)


def _window(cx: float, cy: float, reach: float, h: int, w: int):
    """Slices of the box around a point and the pixel offsets from it, or None if outside."""
    y0, y1 = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (>= 0.5 inside)."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _nucleus_coverage(cell: _Wbc, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    coverage = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), np.float32)
    for x, y, a, b, t in cell.lobes:
        u = (dx - x) * math.cos(t) + (dy - y) * math.sin(t)
        v = (dy - y) * math.cos(t) - (dx - x) * math.sin(t)
        np.maximum(coverage, _soft((1.0 - np.hypot(u / a, v / b)) * b), out=coverage)
    return coverage


def _fits(cell: _Wbc, placed: list[_Wbc], gap: float, h: int, w: int) -> bool:
    """Inside the image (unless it is the border cell) and apart from the placed cells."""
    x, y, margin = *cell.center, cell.reach + 3.0
    inside = margin <= x <= w - 1 - margin and margin <= y <= h - 1 - margin
    return (inside or cell.touches_border) and all(
        math.dist(cell.center, other.center) >= cell.reach + other.reach + gap for other in placed
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
                side, (x, y) = int(rng.integers(4)), first.center
                first.center = [(x, inset), (x, h - 1 - inset), (inset, y), (w - 1 - inset, y)][
                    side
                ]
            if not _fits(first, placed, gap, h, w):
                continue
            if len(unit) == 1:
                break
            second, alpha = unit[1], rng.uniform(0.0, 2 * math.pi)
            distance = 0.95 * (first.edge(alpha) + second.edge(alpha + math.pi))
            second.center = (
                first.center[0] + distance * math.cos(alpha),
                first.center[1] + distance * math.sin(alpha),
            )
            if _fits(second, placed, gap, h, w):
                break
        else:
            widest = 2 * max(cell.reach for cell in cells)
            raise ValueError(
                f"Could not place {len(cells)} white cells up to {widest:.0f} px wide in a "
                f"{w}x{h} image; use a larger image, fewer white cells or a smaller "
                "red_cell_diameter_px."
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
                dist = np.linalg.norm(candidates[:, None, :] - pts[None, :, :], axis=2)
                slack = np.minimum(slack, (dist / (a * big + b * r)).min(axis=1))
        good = np.flatnonzero(slack >= 1.0)
        centres[i] = candidates[good[0] if good.size else int(np.argmax(slack))]
    return centres


def _render_discs(od, centres, radii, density, kind, rng) -> None:
    """Adds red cells (pale centre, darker rim) or platelets (granular, irregular) to ``od``."""
    h, w = od.shape[:2]
    for (cx, cy), r in zip(centres, radii, strict=True):
        bumps = rng.uniform(0.0, 0.07 if kind == "rbc" else 0.18, 2) * (1.0, 0.4)
        phases = rng.uniform(0.0, 2 * math.pi, 2)
        strength, pallor = rng.uniform(0.85, 1.15), rng.uniform(0.45, 0.7)
        window = _window(cx, cy, r * (1.0 + bumps.sum()) + 2, h, w)
        if window is None:
            continue
        sl, dx, dy = window
        rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
        edge = r * (1.0 + bumps[0] * np.cos(2 * (theta - phases[0])))
        edge += r * bumps[1] * np.cos(3 * (theta - phases[1]))
        cover = _soft(edge - rho)
        if kind == "rbc":
            rn = rho / edge
            profile = 1.0 - pallor * np.exp(-((rn / 0.5) ** 2))
            profile += 0.1 * np.exp(-(((rn - 0.85) / 0.12) ** 2))
        else:
            profile = 1.0 + 0.35 * _smooth_noise(rng, cover.shape, 0.2 * r)
        od[sl] += (strength * cover * profile)[..., None] * density


def _render_wbcs(od: np.ndarray, cells: list[_Wbc], stain: dict, d: float, rng) -> tuple:
    """Adds the white cells to ``od``; returns ``(cell_labels, nucleus_labels)``."""
    h, w = od.shape[:2]
    cell_labels, nucleus_labels = np.zeros((h, w), np.int32), np.zeros((h, w), np.int32)
    score = np.full((h, w), np.inf, np.float32)  # an overlap goes to the cell it lies deeper in
    windows = [_window(*cell.center, cell.reach + 2, h, w) for cell in cells]
    for k, (cell, (sl, dx, dy)) in enumerate(zip(cells, windows, strict=True), start=1):
        depth = np.hypot(dx, dy) / cell.edge(np.arctan2(dy, dx))
        take = (depth <= 1.0) & (depth < score[sl])
        cell_labels[sl][take], score[sl][take] = k, depth[take]
    for k, (cell, (sl, dx, dy)) in enumerate(zip(cells, windows, strict=True), start=1):
        rho, edge = np.hypot(dx, dy), cell.edge(np.arctan2(dy, dx))
        cover = _soft(edge - rho)
        nucleus = _nucleus_coverage(cell, dx, dy)
        nucleus_labels[sl][(nucleus >= 0.5) & (cell_labels[sl] == k)] = k
        nucleus *= cover
        sigma, amplitude = _CHROMATIN[cell.wbc_type]
        chromatin = 1.0 + amplitude * _smooth_noise(rng, cover.shape, sigma * d)
        if cell.wbc_type == "blast":  # one to three pale nucleoli
            x, y, a = cell.lobes[0][:3]
            for _ in range(int(rng.integers(1, 4))):
                sx, sy = rng.uniform(-0.45, 0.45, 2) * a + (x, y)
                size = rng.uniform(0.1, 0.16) * a
                chromatin *= 1.0 - 0.35 * np.exp(-((dx - sx) ** 2 + (dy - sy) ** 2) / size**2)
        grain = 0.2 if cell.wbc_type == "neutrophil" else 0.1
        cytoplasm = (
            cover * (1.0 - nucleus) * (1.0 + grain * _smooth_noise(rng, cover.shape, 0.02 * d))
        )
        cytoplasm *= 0.85 + 0.3 * np.clip(rho / edge, 0.0, 1.0) ** 2  # darker at the membrane
        od[sl] += rng.uniform(0.9, 1.1) * (
            cytoplasm[..., None] * _density(stain, f"{cell.wbc_type}_cytoplasm")
            + (nucleus * chromatin)[..., None] * _density(stain, f"{cell.wbc_type}_nucleus")
        )
    return cell_labels, nucleus_labels


def _photograph(od: np.ndarray, background, d: float, rng: np.random.Generator) -> np.ndarray:
    """Turns densities into a camera image: uneven lighting, slight blur and sensor noise."""
    h, w = od.shape[:2]
    cx, cy = rng.uniform(0.3, 0.7, 2)
    xs = np.linspace(-cx, 1.0 - cx, w, dtype=np.float32)
    ys = np.linspace(-cy, 1.0 - cy, h, dtype=np.float32)[:, None]
    light = 1.0 - rng.uniform(0.05, 0.12) * (xs**2 + ys**2) + rng.uniform(-0.03, 0.03) * xs
    np.negative(od, out=od)
    cv2.exp(od, dst=od)  # transmitted light; numpy's exp and 3-wide broadcasts are much slower
    cv2.multiply(od, cv2.merge([light * np.float32(c) for c in background]), dst=od)
    image = cv2.GaussianBlur(od, (0, 0), max(0.6, 0.022 * d))
    # Sensor noise: the sum of two uniform bytes is near-Gaussian and far cheaper to draw.
    pair = np.frombuffer(rng.bytes(2 * image.size), np.uint8).reshape(2, *image.shape)
    noise = pair[0].astype(np.float32)
    noise += pair[1]
    noise -= np.float32(255.0 - 0.5 * 104.5 / 2.4)  # zero mean plus 0.5 for rounding below
    image += noise * np.float32(2.4 / 104.5)  # standard deviation 2.4 grey levels
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def _check(name: str, value: float, low: float, high: float, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}; {fix}.")


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

    White cells are 1.2-2.0 red-cell diameters wide: blasts (large round nucleus with fine
    chromatin and nucleoli, scant blue cytoplasm), lymphocytes (dense round nucleus) and
    neutrophils (2-4 overlapping lobes, lavender cytoplasm). They never touch each other except
    in the touching pairs, whose cytoplasm overlaps by about 5% while the nuclei stay apart. Red
    cells may overlap each other and the edge of white cells; platelets lie in the background.

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
    if stain not in STAINS:
        raise ValueError(f"Unknown stain {stain!r}; choose one of: {', '.join(STAINS)}.")
    for name, value, low, high, fix in [
        ("height", height, 32, 10_000, "use 32 to 10000 pixels"),
        ("width", width, 32, 10_000, "use 32 to 10000 pixels"),
        ("red_cell_diameter_px", red_cell_diameter_px, 6, 200, "typical fields use 12 to 100"),
        ("n_wbc", n_wbc, 0, 10_000, "use a count of 0 or more"),
        ("n_touching_pairs", n_touching_pairs, 0, 5_000, "use a count of 0 or more"),
        ("n_rbc", n_rbc, 0, 100_000, "use a count of 0 or more"),
        ("n_platelets", n_platelets, 0, 100_000, "use a count of 0 or more"),
        ("blast_fraction", blast_fraction, 0.0, 1.0, "give a share such as 0.5"),
    ]:
        _check(name, value, low, high, fix)
    if 2 * n_touching_pairs > n_wbc:
        raise ValueError(
            f"n_touching_pairs={n_touching_pairs} needs {2 * n_touching_pairs} white cells but "
            f"n_wbc={n_wbc}; raise n_wbc or lower n_touching_pairs."
        )
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
    wbc_reach = np.array([c.reach for c in wbcs], float)
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
            "wbc", c.center, c.radius, c.nucleus_radius, bool(blast), c.touches_border, c.wbc_type
        )
        for c, blast in zip(wbcs, flags, strict=True)
    ]
    for kind, centres, radii in [
        ("rbc", rbc_centres, rbc_radii),
        ("platelet", platelet_centres, platelet_radii),
    ]:
        cells += [
            SyntheticCell(kind, (float(x), float(y)), float(r))
            for (x, y), r in zip(centres, radii, strict=True)
        ]
    return SyntheticSmear(
        image=image,
        cells=tuple(cells),
        red_cell_diameter_px=d,
        nucleus_labels=nucleus_labels,
        cell_labels=cell_labels,
        touching_pairs=tuple((2 * i + 1, 2 * i + 2) for i in range(n_touching_pairs)),
        stain=stain,
    )


def make_demo_smear() -> SyntheticSmear:
    """A 1024x768 Wright-stained field with 8 white cells (half blasts) for the app's demo."""
    return make_smear(
        768,
        1024,
        n_wbc=8,
        n_touching_pairs=1,
        n_rbc=300,
        n_platelets=12,
        red_cell_diameter_px=34.0,
        stain="wright",
        blast_fraction=0.5,
        border_wbc=True,
        seed=7,
    )
