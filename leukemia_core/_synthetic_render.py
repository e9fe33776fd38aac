"""Drawing helpers of the synthetic smear generator.

White-cell geometry (:class:`_Wbc`) and the rendering of cells into optical densities, then
into a camera image, for :mod:`leukemia_core.synthetic`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_CHROMATIN = {"blast": (0.025, 0.10), "lymphocyte": (0.05, 0.22), "neutrophil": (0.04, 0.18)}


@dataclass
class _Wbc:
    """One white cell in pixels; the nucleus is a union of ellipses ``(x, y, a, b, angle)``."""

    wbc_type: str
    radius: float
    lobes: list[tuple[float, float, float, float, float]]
    center: tuple[float, float] = (0.0, 0.0)
    touches_border: bool = False

    @property
    def nucleus_radius(self) -> float:
        if len(self.lobes) == 1:
            return math.sqrt(self.lobes[0][2] * self.lobes[0][3])
        return max(math.hypot(x, y) + a for x, y, a, _, _ in self.lobes)


def _density(stain: dict, part: str) -> np.ndarray:
    """Optical density per channel of a stained part, relative to the background."""
    return np.log(np.float32(stain["background"]) / np.float32(stain[part]))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), max(sigma, 0.3))
    return noise / (float(noise.std()) + 1e-6)


def _window(cx: float, cy: float, reach: float, h: int, w: int):
    """Slices of the box around a point (which must touch the image) and offsets from it."""
    y0, y1 = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
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


def _render_discs(od, centres, radii, density, kind, rng) -> None:
    """Adds red cells (pale centre, darker rim) or platelets (granular, irregular) to ``od``."""
    h, w = od.shape[:2]
    for (cx, cy), r in zip(centres, radii, strict=True):
        bumps = rng.uniform(0.0, 0.07 if kind == "rbc" else 0.18, 2) * (1.0, 0.4)
        phases = rng.uniform(0.0, 2 * math.pi, 2)
        strength, pallor = rng.uniform(0.85, 1.15), rng.uniform(0.45, 0.7)
        sl, dx, dy = _window(cx, cy, r * (1.0 + bumps.sum()) + 2, h, w)
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
    windows = [_window(*cell.center, cell.radius + 2, h, w) for cell in cells]
    for k, (cell, (sl, dx, dy)) in enumerate(zip(cells, windows, strict=True), start=1):
        depth = np.hypot(dx, dy) / cell.radius
        take = (depth <= 1.0) & (depth < score[sl])
        cell_labels[sl][take], score[sl][take] = k, depth[take]
    for k, (cell, (sl, dx, dy)) in enumerate(zip(cells, windows, strict=True), start=1):
        rho = np.hypot(dx, dy)
        cover = _soft(cell.radius - rho)
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
        grain = (0.2 if cell.wbc_type == "neutrophil" else 0.1) * _smooth_noise(
            rng, rho.shape, 0.02 * d
        )
        rim = 0.85 + 0.3 * np.clip(rho / cell.radius, 0.0, 1.0) ** 2  # darker at the membrane
        cytoplasm = cover * (1.0 - nucleus) * (1.0 + grain) * rim
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
    noise = cv2.add(pair[0], pair[1], dtype=cv2.CV_32F) - np.float32(255.0 - 0.5 * 104.5 / 2.4)
    image += noise * np.float32(2.4 / 104.5)  # std 2.4 grey levels; mean 0.5 rounds below
    return np.clip(image, 0, 255, out=image).astype(np.uint8)
