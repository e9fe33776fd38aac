"""Touching white cells and clumps: rejoin the halves of one granulocyte, split clumps of pressed
blasts, drop platelet clumps.

Two opposite mistakes threaten a blast count. A bilobed eosinophil or a neutrophil with two fat
lobes falls apart into two "cells" when its nucleus is split at the neck between the lobes; pressed
blasts with scant cytoplasm fuse into one because their joint nucleus has no neck at all.

- Halves of one round cell meet along a cut as long as the cell is wide, and share plenty of
  cytoplasm; two round cells touch along a short chord. :func:`merge_halves` rejoins the former.
- Pressed blasts are nearly all nucleus and are parted by thin paler lines between their chromatin,
  which show only at a finer scale. :func:`split_clump` cuts along them, but only where the outline
  is dented: pressed round cells always leave notches where they meet, while pale chromatin inside
  a round outline is the texture of one blast (cutting it counts one blast twice).
- A round cell cut in two by a watershed leaves a union as solid as its pieces; pressed cells
  leave notches, so their union is less solid. :func:`merge_round_unions` rejoins the former.
- Clumped platelets take the nucleus colour and can reach the size of a small lymphocyte, but a
  cell that small is round; :func:`drop_platelet_clumps` removes the small, ragged ones.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from leukemia_core.masks import fill_holes
from leukemia_core.resampling import resize, resize_mask


def merge_halves(
    nuclei: np.ndarray,
    cells: np.ndarray,
    max_nucleus_fraction: float,
    max_fraction_gap: float,
    min_contact: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejoin touching pieces of one cytoplasm-rich cell; returns relabelled (nuclei, cells).

    Two pieces are joined when the nucleus covers less than ``max_nucleus_fraction`` of each and
    about the same fraction of both (within ``max_fraction_gap``: halves of one granulocyte share
    its cytoplasm evenly, a blast beside a granulocyte does not), and their shared border is at least ``min_contact`` times the square root of the smaller
    piece's area (two touching discs score about 0.35, the halves of one disc about 1.6).
    """
    n = int(cells.max())
    if n < 2:
        return nuclei, cells
    cell_area = np.bincount(cells.ravel(), minlength=n + 1)
    nucleus_area = np.bincount(nuclei.ravel(), minlength=n + 1)
    parent = np.arange(n + 1)
    for (a, b), contact in sorted(_contacts(cells).items()):
        fractions = nucleus_area[a] / cell_area[a], nucleus_area[b] / cell_area[b]
        if (
            max(fractions) < max_nucleus_fraction
            and abs(fractions[0] - fractions[1]) <= max_fraction_gap
            and contact >= min_contact * np.sqrt(min(cell_area[a], cell_area[b]))
        ):
            parent[parent == parent[b]] = parent[a]
    new_ids = _renumbered(parent)
    return new_ids[nuclei], new_ids[cells]


def merge_slabs(
    nuclei: np.ndarray,
    cells: np.ndarray,
    border: tuple[int, ...],
    min_contact: float,
    boxes: list | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Rejoin slabs cut off one cell; returns (nuclei, cells, border ids), relabelled in place.

    A piece whose shared border with a neighbour is at least ``min_contact`` times the square
    root of its area is thinner than its cut is long: a lobe or a rim of the neighbour sliced off
    by a watershed, never a cell of its own (pressed round cells meet along at most about 1.6).
    It joins the neighbour it shares most border with, so a slab between two cells never fuses
    them. Works inside each cell's box, so a field of 5 megapixels costs milliseconds.
    ``boxes`` (``ndi.find_objects(cells)``, a full-image pass) is reused when given and kept up
    to date in place, for the steps that follow.
    """
    boxes = ndi.find_objects(cells) if boxes is None else boxes
    area = np.zeros(len(boxes) + 1)
    for index, box in enumerate(boxes, start=1):
        if box is not None:
            area[index] = np.count_nonzero(cells[box] == index)
    joins: dict[int, tuple[int, int]] = {}  # slab -> (contact, the neighbour it joins)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        window = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        for (a, b), contact in _contacts(cells[window]).items():
            slab, other = (a, b) if area[a] <= area[b] else (b, a)
            if index == min(a, b) and contact >= min_contact * np.sqrt(area[slab]):
                joins[slab] = max(joins.get(slab, (0, 0)), (contact, other))
    if not joins:
        return nuclei, cells, border
    parent = np.arange(len(boxes) + 1)
    for slab, (_, other) in sorted(joins.items()):
        roots = parent[slab], parent[other]
        parent[np.isin(parent, roots)] = min(roots)  # a group's root is its lowest id
    new_ids = _renumbered(parent)
    moved = {old: int(new) for old, new in enumerate(new_ids) if old != new}
    # A nucleus pixel can lie outside its cell's box (a later cell drawn over it): nuclei get
    # boxes of their own.
    nucleus_boxes = ndi.find_objects(nuclei, max_label=len(boxes))
    # Every id moves down to its group's rank, and lower ids move first, so no move overwrites
    # a cell that has yet to move.
    for old, new in sorted(moved.items()):
        for labels, found in ((cells, boxes), (nuclei, nucleus_boxes)):
            if found[old - 1] is not None:
                view = labels[found[old - 1]]
                view[view == old] = new
    joined: list = [None] * int(new_ids.max())
    for old, box in enumerate(boxes, start=1):
        new = int(new_ids[old])
        if box is not None:
            joined[new - 1] = box if joined[new - 1] is None else _joint_box(joined[new - 1], box)
    boxes[:] = joined
    return nuclei, cells, tuple(sorted({moved.get(i, i) for i in border}))


def merge_round_unions(
    nuclei: np.ndarray,
    cells: np.ndarray,
    border: tuple[int, ...],
    margin: float,
    min_contact: float,
    boxes: list | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Rejoin the pieces of one round cell cut in two; returns (nuclei, cells, border ids).

    Pressed cells leave notches where they meet, so their union fills less of its convex hull
    than either cell does (ALL-IDB1's touching blasts lose at least 0.028). Two touching pieces
    whose union is at most ``margin`` less solid than the more solid piece, and whose cut is at
    least ``min_contact`` times the square root of the smaller piece's area, are one cell. A
    negative ``margin`` turns the step off. ``boxes`` (``ndi.find_objects(cells)``, a full-image
    pass) is reused when given and kept up to date in place.
    """
    boxes = ndi.find_objects(cells) if boxes is None else boxes
    if margin < 0 or len(boxes) < 2:
        return nuclei, cells, border
    gone_ids = []
    while (pair := _round_pair(cells, boxes, margin, min_contact)) is not None:
        keep, gone = pair
        # A nucleus can reach beyond its cell's box (merge_slabs): it is found in its own box.
        nucleus_box = ndi.find_objects(nuclei, max_label=gone)[gone - 1]
        for labels, box in ((cells, boxes[gone - 1]), (nuclei, nucleus_box)):
            if box is not None:
                view = labels[box]
                view[view == gone] = keep
        boxes[keep - 1] = _joint_box(boxes[keep - 1], boxes[gone - 1])
        boxes[gone - 1] = None
        border = tuple(sorted({keep if i == gone else i for i in border}))
        gone_ids.append(gone)
    if not gone_ids:
        return nuclei, cells, border
    kept = np.ones(len(boxes) + 1, dtype=bool)
    kept[gone_ids] = False
    return _keep_only(nuclei, cells, border, kept, boxes)


def _joint_box(first: tuple, second: tuple) -> tuple:
    """The smallest box holding two boxes."""
    pairs = zip(first, second, strict=True)
    return tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in pairs)


def _round_pair(cells: np.ndarray, boxes: list, margin: float, min_contact: float):
    """The first touching pair (ids) :func:`merge_round_unions` should join, or None."""
    hulls: dict[int, tuple[np.ndarray, int]] = {}

    def hull(k: int) -> tuple[np.ndarray, int]:
        # The hull of a union is the hull of the pieces' hull points: a few dozen points each.
        if k not in hulls:
            box = boxes[k - 1]
            mask = (cells[box] == k).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            offset = np.array([box[1].start, box[0].start])
            points = np.concatenate(contours).reshape(-1, 2) + offset
            hulls[k] = (cv2.convexHull(points.astype(np.int32)).reshape(-1, 2), int(mask.sum()))
        return hulls[k]

    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        window = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        for (a, b), contact in _contacts(cells[window]).items():
            if index != a:  # each pair once, from its lower id
                continue
            (points_a, area_a), (points_b, area_b) = hull(a), hull(b)
            if contact < min_contact * np.sqrt(min(area_a, area_b)):
                continue
            union = cv2.convexHull(np.concatenate([points_a, points_b]))
            pieces = max(_hull_fill(area_a, points_a), _hull_fill(area_b, points_b))
            if _hull_fill(area_a + area_b, union) >= pieces - margin:
                return a, b
    return None


def _hull_fill(area: int, hull: np.ndarray) -> float:
    """Area over the area of a convex hull through pixel centres."""
    hull = hull.reshape(-1, 1, 2)
    # The hull through pixel centres falls short of the pixels' area by half a pixel all round.
    return area / (cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0)


def drop_platelet_clumps(
    nuclei: np.ndarray,
    cells: np.ndarray,
    border: tuple[int, ...],
    max_area: float,
    max_solidity: float,
    boxes: list | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Remove platelet clumps and smudged debris; returns relabelled (nuclei, cells, border ids).

    A white cell smaller than ``max_area`` pixels (about a red cell) is a lymphocyte-sized round
    cell; an object that small whose outline fills less than ``max_solidity`` of its convex hull
    is a cluster of platelets or a smear of debris, which take the nucleus colour. Cells cut by
    the border keep their straight edge and are left to the border rules. ``boxes`` as in
    :func:`merge_round_unions`.
    """
    boxes = ndi.find_objects(cells) if boxes is None else boxes
    keep = np.zeros(len(boxes) + 1, dtype=bool)
    cut = set(border)
    for index, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = cells[box] == index
        keep[index] = (
            index in cut or np.count_nonzero(mask) >= max_area or solidity(mask) >= max_solidity
        )
    if keep[1:].all():
        return nuclei, cells, border
    return _keep_only(nuclei, cells, border, keep, boxes)


def _keep_only(nuclei, cells, border, kept: np.ndarray, boxes: list):
    """Labels (and border ids) with only the ids where ``kept`` is True, renumbered 1..k;
    ``boxes`` follows in place."""
    kept[0] = False
    new_ids = np.zeros(len(kept), dtype=np.int32)
    new_ids[kept] = np.arange(1, int(kept.sum()) + 1, dtype=np.int32)
    boxes[:] = [box for box, keep in zip(boxes, kept[1:], strict=True) if keep]
    return new_ids[nuclei], new_ids[cells], tuple(int(new_ids[i]) for i in border)


def _renumbered(parent: np.ndarray) -> np.ndarray:
    """Consecutive ids 1..k for the groups of ``parent``; background (0) stays 0."""
    _, new_ids = np.unique(parent, return_inverse=True)
    return new_ids.astype(np.int32)


def _contacts(labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Length in pixels of the border shared by each pair of touching labels (4-neighbours)."""
    pairs = []
    for first, second in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        touching = (first != second) & (first > 0) & (second > 0)
        a, b = first[touching], second[touching]
        pairs.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    found, counts = np.unique(np.concatenate(pairs), axis=0, return_counts=True)
    return {(int(a), int(b)): int(c) for (a, b), c in zip(found, counts, strict=True)}


def split_clump(
    patch: np.ndarray,
    cell: np.ndarray,
    nucleus: np.ndarray,
    diameter: float,
    min_part_nucleus_area: float,
    depth: float,
    round_solidity: float = 0.95,
    dented_solidity: float = 0.9,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a nucleus-dense cell into pressed cells along the paler lines between them.

    Dark chromatin cores are found on the green channel (chromatin is darkest there, the thin
    cytoplasm rims between pressed blasts are not), their distance-transform peaks seed a
    watershed over the cell, and parts whose nucleus is too small to be a cell are given back.

    Args:
        patch: RGB uint8 pixels of the cell's box.
        cell: Boolean whole-cell mask in the box.
        nucleus: Boolean nucleus mask in the box.
        diameter: Red-cell diameter in the patch's pixels.
        min_part_nucleus_area: Smallest nucleus a part may keep, in pixels.
        depth: How far (px) a core's distance peak must rise above the neck to count as its own.
        round_solidity: Cells whose area fills more than this fraction of their convex hull are
            round, hence one cell, and are never split.
        dented_solidity: Below this, deep dents already say "several cells", so cores need only
            half of ``depth`` to part them.

    Returns:
        ``[(cell_mask, nucleus_mask), ...]``: one entry when the cell is not split.
    """
    roundness = solidity(cell)
    if nucleus.sum() < 2 * min_part_nucleus_area or roundness > round_solidity:
        return [(cell, nucleus)]
    if roundness < dented_solidity:
        depth *= 0.5
    # Forty pixels per red cell resolve the pale lines between pressed cells; more only costs time.
    scale = min(1.0, 40.0 / diameter)
    regions = _split_regions(
        resize(patch, scale),
        resize_mask(cell, scale),
        resize_mask(nucleus, scale),
        diameter * scale,
        min_part_nucleus_area * scale**2,
        depth * scale,
    )
    if regions is None:
        return [(cell, nucleus)]
    if scale < 1.0:
        size = (cell.shape[1], cell.shape[0])
        regions = cv2.resize(regions.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    parts = []
    for k in range(1, int(regions.max()) + 1):
        part_cell, part_nucleus = cell & (regions == k), nucleus & (regions == k)
        if part_nucleus.any():
            parts.append((part_cell, part_nucleus))
    return parts if len(parts) > 1 else [(cell, nucleus)]


def solidity(mask: np.ndarray) -> float:
    """Area of a mask's largest part over the area of its convex hull (1.0 for a disc)."""
    count, parts, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count < 2:
        return 1.0
    largest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    hull = cv2.convexHull(cv2.findNonZero((parts == largest).astype(np.uint8)))
    return min(1.0, _hull_fill(int(stats[largest, cv2.CC_STAT_AREA]), hull))


def _split_regions(patch, cell, nucleus, diameter, min_part_nucleus_area, depth):
    """Watershed regions of a clump (labels 1..k, at most 255), or None when it is one cell."""
    if not nucleus.any():  # the nucleus can vanish when a thin one is shrunk
        return None
    green = cv2.GaussianBlur(patch[..., 1].astype(np.float32), (0, 0), max(0.5, 0.02 * diameter))
    inside = float(np.median(green[nucleus]))
    outside = float(np.median(green[~cell])) if (~cell).any() else 255.0
    core = nucleus & (green < inside + 0.4 * (outside - inside))
    # Nucleoli and pale chromatin make holes inside one nucleus, not lines across it.
    core = fill_holes(core)
    bridge = max(1, round(0.03 * diameter))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bridge + 1, 2 * bridge + 1))
    core = cv2.morphologyEx(core.astype(np.uint8), cv2.MORPH_OPEN, disk).astype(bool)
    distance = cv2.distanceTransform(core.astype(np.uint8), cv2.DIST_L2, 5)
    markers, count = ndi.label(h_maxima(distance, max(1.0, depth)))
    # Downhill inside the cores, uphill away from them: outside the cores the flood advances by
    # distance to the nearest core, so cuts fall half-way between cores instead of along the
    # straight lines a watershed draws across a flat plateau.
    away = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, 5)
    landscape = np.where(core, -distance, away)
    while 2 <= count < 256:
        regions = watershed(landscape, markers, mask=cell)
        part_nucleus = np.bincount(regions[nucleus], minlength=count + 1)[1:]
        smallest = int(part_nucleus.argmin())
        if part_nucleus[smallest] >= min_part_nucleus_area:
            return regions
        # Give the smallest part back to its neighbours and flood again.
        markers[markers == smallest + 1] = 0
        markers, count = ndi.label(markers > 0)
    return None
