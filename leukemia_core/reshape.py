"""Split and merge in review: a reviewer corrects how cells were outlined.

A clump of pressed blasts outlined as one cell is split into ``N`` (a watershed from ``N``
centres), along a line the reviewer gives, or by an outline drawn around one of its cells; two
pieces of one cell are merged. The new cells are cropped and classified exactly like the
segmentation's (:func:`cropping.crop_cells`, :func:`pipeline.label_cells`), wait as uncertain
for the reviewer's label, and replace the old ones in the case record
(:meth:`store_reshape.CaseReshape.reshape_cells`); undo brings the old ones back."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from numbers import Integral

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from leukemia_core.colour import nucleus_score
from leukemia_core.cropping import DEFAULT_CROP_SIZE, crop_cells
from leukemia_core.errors import LeukemiaCoreError
from leukemia_core.illumination import cut_by_surround, dark_surround
from leukemia_core.labellers import Labeller, labeller_for, send_to_review
from leukemia_core.masks import outline_mask, touches_border
from leukemia_core.pipeline import label_cells
from leukemia_core.roles import Permission, User, require
from leukemia_core.segmentation import DEFAULT_PARAMS, field_red_cell_diameter
from leukemia_core.types import Cell, CellLabel, Segmentation

MAX_PARTS = 6
LASSO_MARGIN = 0.3  # of the drawn cell's radius, either side of a lasso line: the watershed decides
ROUNDER_BY = 0.05  # mean isoperimetric quotient by which a split from the whole outline wins
NUCLEUS_BLUR_PX = 2.0  # smooths chromatin texture, keeps the pale line between two nuclei
SPLIT_PREFIX, MERGE_PREFIX = "split of ", "merge of "
# Crops -> the explanation overlays kept with them (the heatmaps the case was saved with).
Explainer = Callable[[list[np.ndarray]], list[np.ndarray | None]]


class ReshapeError(LeukemiaCoreError, ValueError):
    """A split or merge cannot be done as asked (too small, not touching, other fields)."""


def split_masks(
    mask: np.ndarray,
    parts: int = 2,
    line: tuple[tuple[float, float], ...] | None = None,
    image: np.ndarray | None = None,
) -> list[np.ndarray]:
    """A cell mask cut into ``parts`` pieces, or in two by a drawn ``line`` (mask coordinates).

    ``line`` of two points cuts along the straight line through them; of three or more, it is a
    closed outline drawn around one of the cells: what lies inside is one piece, the rest the
    other, the border moved (within a margin of the drawing) onto the neck or pale line
    between the cells. Without a line, the ``parts`` centres come from k-means on the nucleus pixels when
    ``image`` (the RGB pixels under ``mask``) is given, and on all the cell's pixels (kept
    instead when its pieces are clearly rounder), and the borders from a watershed on the
    distance to the edge plus the nucleus evidence, so cuts follow the necks and the pale lines
    between pressed cells.
    """
    if line is not None:
        if np.ndim(line) == 2 and len(line) >= 3 and np.shape(line)[1] == 2:
            return _cut_around(mask, line, image)
        return _cut_along(mask, line)
    if isinstance(parts, bool) or not isinstance(parts, Integral) or not 2 <= parts <= MAX_PARTS:
        raise ReshapeError(f"Split into 2 to {MAX_PARTS} cells (a whole number), not {parts!r}.")
    if int(mask.sum()) < 20 * parts:
        raise ReshapeError("This cell is too small to split.")
    seedings, score = [mask], None  # where the pieces' centres are looked for
    if image is not None:
        # Pressed blasts meet cytoplasm to cytoplasm: the nuclei say where the cells are. But a
        # cell much darker than its neighbours can fall below the nucleus level and get no
        # centre, so the whole outline is tried too and the rounder set of pieces kept.
        score = _blurred_nucleus_score(image)
        nuclei = mask & (score > _nucleus_level(score, mask))
        if nuclei.sum() >= 20 * parts:
            seedings.insert(0, nuclei)
        else:  # too little nucleus to go by
            score = None
    elevation = _elevation(mask, score)
    splits = []
    for seeds in seedings:
        try:
            splits.append(_largest_components(_watershed_split(mask, seeds, elevation, parts)))
        except ReshapeError as error:  # a piece in two parts: the other seeding may do better
            splits.append(error)
    kept = [pieces for pieces in splits if not isinstance(pieces, ReshapeError)]
    if not kept:
        raise splits[0]
    # The nuclei's split unless the outline's is clearly rounder (a cell left without a centre
    # leaves a sliver beside it, or one piece holding two cells).
    return kept[-1] if _roundness(kept[-1]) > _roundness(kept[0]) + ROUNDER_BY else kept[0]


def _blurred_nucleus_score(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(nucleus_score(image), (0, 0), NUCLEUS_BLUR_PX)


def _elevation(mask: np.ndarray, score: np.ndarray | None) -> np.ndarray:
    """What a watershed floods inside ``mask``: low at the cells' centres (far from the edge,
    and, given the nucleus ``score``, dark chromatin), high at necks and pale lines."""
    distance = ndi.distance_transform_edt(mask)
    elevation = -distance / distance.max()
    if score is not None:
        elevation -= np.clip(score, 0, None) / max(float(score[mask].max()), 1.0)
    return elevation


def _watershed_split(mask, seeds, elevation, parts: int) -> list[np.ndarray]:
    """``parts`` centres by k-means on the ``seeds`` pixels; borders by a watershed."""
    ys, xs = np.nonzero(seeds)
    points = np.column_stack([xs, ys]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.5)
    cv2.setRNGSeed(0)  # the same click gives the same split
    _, assigned, _ = cv2.kmeans(points, parts, None, criteria, 5, cv2.KMEANS_PP_CENTERS)
    clusters = np.zeros(mask.shape, np.int32)
    clusters[ys, xs] = assigned.ravel() + 1
    # Seeds are each cluster's core (its innermost half, measured inside the cluster: depth in
    # the whole clump would pull every core towards the junction); the watershed does the rest.
    cores = np.zeros_like(clusters)
    for k in range(1, parts + 1):
        inside = clusters == k
        depth = ndi.distance_transform_edt(inside)
        cores[inside & (depth >= np.median(depth[inside]))] = k
    labels = watershed(elevation, cores, mask=mask)
    return [labels == k for k in range(1, parts + 1)]


def _roundness(pieces: list[np.ndarray]) -> float:
    """Mean isoperimetric quotient of the pieces (1 for discs): pressed cells are round, a
    sliver or a piece holding two cells is not."""
    quotients = []
    for piece in pieces:
        contours, _ = cv2.findContours(piece.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)  # fmt: skip
        perimeter = sum(cv2.arcLength(c, True) for c in contours)
        quotients.append(4 * np.pi * piece.sum() / max(perimeter, 1.0) ** 2)
    return float(np.mean(quotients))


def _cut_around(mask: np.ndarray, outline, image: np.ndarray | None) -> list[np.ndarray]:
    """The cell drawn around and the rest of the outline. A hand-drawn line is near the border,
    not on it: a band of :data:`LASSO_MARGIN` of the drawn cell's radius either side of it goes to whichever
    side the watershed (necks, and the pale lines between nuclei) gives it, so a line drawn
    just inside a cell's edge leaves no rim behind."""
    drawn = outline_mask(np.asarray(outline, dtype=np.float64), mask.shape) & mask
    margin = round(LASSO_MARGIN * float(np.sqrt(drawn.sum() / np.pi)))
    if margin < 2:
        return _cut_along(mask, outline)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    inner = cv2.erode(drawn.astype(np.uint8), disc).astype(bool)
    outer = mask & ~cv2.dilate(drawn.astype(np.uint8), disc).astype(bool)
    if not inner.any() or not outer.any():  # drawn around (nearly) all of it, or a sliver
        return _cut_along(mask, outline)
    score = None if image is None else _blurred_nucleus_score(image)
    labels = watershed(_elevation(mask, score), inner * 1 + outer * 2, mask=mask)
    return _largest_components([labels == 1, labels == 2])


def _origin_ids(origin: str) -> list[int]:
    """The ids of the cells a split or merge replaced, from a cell's ``origin``."""
    return [int(i) for i in origin.removeprefix(SPLIT_PREFIX).removeprefix(MERGE_PREFIX).split("+")]


def _cut_along(mask: np.ndarray, line) -> list[np.ndarray]:
    points = np.asarray(line, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
        raise ReshapeError(f"A cut is two or more (x, y) points, not {np.shape(line)}.")
    ys, xs = np.nonzero(mask)
    if len(points) == 2:
        (x0, y0), (x1, y1) = points
        inside = (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) < 0
    else:
        inside = outline_mask(points, mask.shape)[ys, xs]
    pieces = [np.zeros_like(mask) for _ in range(2)]
    pieces[0][ys[inside], xs[inside]] = True
    pieces[1][ys[~inside], xs[~inside]] = True
    return _largest_components(pieces)


def merge_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    """One mask from touching pieces (gaps of a pixel or two closed)."""
    union = np.logical_or.reduce(list(masks))
    closed = cv2.morphologyEx(union.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    merged = ndi.binary_fill_holes(closed.astype(bool) | union)
    if ndi.label(merged)[1] != 1:
        raise ReshapeError("These cells do not touch: merge only pieces of one cell.")
    return merged


def new_cells(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    *,
    first_id: int,
    field_index: int,
    labeller: Labeller,
    origin: str,
    crop_size: int = DEFAULT_CROP_SIZE,
    explainer: Explainer | None = None,
) -> list[Cell]:
    """Cells for full-field masks, cropped and classified like the segmentation's cells, with
    the overlay ``explainer`` makes of each crop (the report shows it as it shows the others')."""
    cell_labels = np.zeros(image.shape[:2], np.int32)
    for k, mask in enumerate(masks):
        cell_labels[mask] = first_id + k
    score = nucleus_score(image)
    nuclei = np.where(score > _nucleus_level(score, cell_labels > 0), cell_labels, 0)
    margin = DEFAULT_PARAMS.border_margin_px  # the segmentation's rule: edge or field stop
    outside = dark_surround(image)
    stopped = set() if outside is None else cut_by_surround(cell_labels, outside, margin)
    height, width = image.shape[:2]
    whole = (slice(0, height), slice(0, width))  # full-field masks: their box is the field
    border = tuple(first_id + k for k, m in enumerate(masks)
                   if touches_border(m, *whole, height, width, margin)
                   or first_id + k in stopped)  # fmt: skip
    segmentation = Segmentation(nuclei.astype(np.int32), cell_labels,
                                field_red_cell_diameter(image), 1.0, border)  # fmt: skip
    found = [c for c in crop_cells(image, segmentation, size=crop_size) if c.cell_id >= first_id]
    cells = label_cells(found, labeller_for(labeller), field_index)
    if explainer is not None and cells:
        overlays = explainer([c.crop for c in cells])
        cells = [replace(c, overlay=o) for c, o in zip(cells, overlays, strict=True)]
    # The model's probability is kept, but a cell a reviewer cut or joined is one its
    # calibration never saw: its call is the reviewer's, so it waits as uncertain (one key
    # accepting a confident "blast" on half a cell would count it twice).
    return [replace(c, origin=origin, model_label=send_to_review(c.model_label),
                    label=send_to_review(c.model_label)) for c in cells]  # fmt: skip


def _nucleus_level(score: np.ndarray, inside: np.ndarray) -> float:
    """Nucleus threshold inside new cells, never below the segmentation's own floor."""
    floor = DEFAULT_PARAMS.min_nucleus_score
    values = score[inside]
    return max(floor, float(np.percentile(values, 40))) if values.size else floor


# A piece may shed slivers (a few pixels where the cut grazes the outline), never a cell: a
# second part above this share of the piece is refused rather than dropped.
MAX_DROPPED_SHARE = 0.05


def _largest_components(pieces: list[np.ndarray]) -> list[np.ndarray]:
    """Each piece reduced to its largest connected part; empty pieces, and pieces in two or
    more real parts (which would lose a cell), refused."""
    out = []
    for piece in pieces:
        labels, n = ndi.label(piece)
        if n == 0:
            raise ReshapeError(
                "The cut leaves an empty piece: draw the line across the cell, or the outline "
                "around one of its cells (part inside, part outside)."
            )
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        if int(np.sort(sizes)[-2]) > MAX_DROPPED_SHARE * sizes.sum():
            raise ReshapeError(
                f"The cut leaves a piece in {int((sizes > MAX_DROPPED_SHARE * sizes.sum()).sum())} "
                "separate parts, and one would be lost: draw around a whole cell at the end of "
                "the clump, outside its outline but where it meets the others (a line just "
                "inside its edge leaves a rim behind), or use 'Split into N cells'."
            )
        out.append(labels == int(sizes.argmax()))
    return out


class ReviewReshape:
    """Split, merge and undo on :class:`leukemia_core.review.Review` (mixed in)."""

    def split(
        self, store, field_index: int, cell_id: int, *, user: User, labeller=None,
        parts: int = 2, line=None, crop_size: int = DEFAULT_CROP_SIZE, explainer=None,
    ) -> tuple[Cell, ...]:  # fmt: skip
        """Replace one cell by ``parts`` cells, or by two cut by a drawn ``line`` in field pixels
        (two points: a straight cut; more: an outline around one of the cells, see
        :func:`split_masks`)."""
        require(user, Permission.REVIEW)
        self._require_saved("the split is recorded in it")
        self.refresh(store)  # new ids after those another reviewer may have added
        cell = self._live(field_index, cell_id)
        x0, y0, x1, y1 = cell.bbox
        local = None if line is None else tuple((x - x0, y - y0) for x, y in line)
        pixels = self.fields[field_index].image[y0:y1, x0:x1]
        pieces = split_masks(cell.mask(), parts, local, pixels)
        masks = [self._field_mask(cell, piece) for piece in pieces]
        made = new_cells(self.fields[field_index].image, masks, first_id=self._next_id(field_index),
                         field_index=field_index, labeller=labeller,
                         origin=f"{SPLIT_PREFIX}{cell_id}", crop_size=crop_size,
                         explainer=explainer)  # fmt: skip
        how = ("by its nuclei" if line is None else
               "along a drawn line" if len(line) == 2 else "around a drawn outline")  # fmt: skip
        note = f"cell {cell_id} split into cells {', '.join(str(c.cell_id) for c in made)} {how}"
        store.reshape_cells(self.case_id, retire=[cell.key], add=made, reviewer=user.name,
                            action="split", note=note)  # fmt: skip
        self._reload(store)
        return tuple(self.cell(*c.key) for c in made)

    def merge(
        self, store, keys: Iterable[tuple[int, int]], *, user: User, labeller=None,
        crop_size: int = DEFAULT_CROP_SIZE, explainer=None,
    ) -> Cell:  # fmt: skip
        """Replace two or more touching cells of one field by one cell."""
        require(user, Permission.REVIEW)
        self._require_saved("the merge is recorded in it")
        self.refresh(store)
        cells = list({c.key: self._live(*c.key) for c in self.cells_of(keys)}.values())
        if len(cells) < 2 or len({c.field_index for c in cells}) != 1:
            raise ReshapeError("Merge needs two or more different cells of the same field.")
        field_index = cells[0].field_index
        merged = merge_masks([self._field_mask(c, c.mask()) for c in cells])
        ids = "+".join(str(c.cell_id) for c in cells)
        (made,) = new_cells(self.fields[field_index].image, [merged],
                            first_id=self._next_id(field_index), field_index=field_index,
                            labeller=labeller, origin=f"{MERGE_PREFIX}{ids}",
                            crop_size=crop_size, explainer=explainer)  # fmt: skip
        store.reshape_cells(self.case_id, retire=[c.key for c in cells], add=[made],
                            reviewer=user.name, action="merge",
                            note=f"cells {ids.replace('+', ', ')} merged into cell {made.cell_id}")  # fmt: skip
        self._reload(store)
        return self.cell(*made.key)

    def undo_reshape(
        self, store, field_index: int, cell_id: int, *, user: User
    ) -> list[tuple[int, int]]:
        """Undo the split or merge that made this cell: its pieces go, the old cells return
        (their keys are returned)."""
        require(user, Permission.REVIEW)
        self._require_saved("the undo is recorded in it")
        cell = self.cell(field_index, cell_id)
        if not cell.origin:
            raise ReshapeError(f"Cell {cell_id} was found by the segmentation: nothing to undo.")
        kind = "split" if cell.origin.startswith(SPLIT_PREFIX) else "merge"
        if cell.label == CellLabel.REPLACED:
            raise ReshapeError(f"Cell {cell_id} is no longer in the case (split or merged again, "
                               f"or its {kind} undone): undo on a cell shown.")  # fmt: skip
        in_field = [c for c in self._cells.values() if c.field_index == field_index]
        made = {c.cell_id for c in in_field if c.origin == cell.origin}  # undone ones too
        # Cells made since from these pieces (and from those, and so on): reviving the old
        # cells beside a live one would count one cell twice.
        later, grown = set(), True
        while grown:
            found = {c.cell_id for c in in_field
                     if c.origin and set(_origin_ids(c.origin)) & (made | later)} - made  # fmt: skip
            grown, later = bool(found - later), later | found
        if live_later := sorted(c.cell_id for c in self.cells if c.cell_id in later
                                and c.field_index == field_index):  # fmt: skip
            which = ", ".join(map(str, live_later))
            raise ReshapeError(
                f"Cell{'s' if len(live_later) > 1 else ''} {which} came from a later split or "
                f"merge of this {kind}'s pieces; undo that first (on cell {live_later[0]})."
            )
        siblings = [c.key for c in self.cells
                    if c.field_index == field_index and c.origin == cell.origin]  # fmt: skip
        originals = [(field_index, i) for i in _origin_ids(cell.origin)]
        action = f"undo {kind}"
        store.reshape_cells(self.case_id, retire=siblings, revive=originals, reviewer=user.name,
                            action=action, note=f"{cell.origin} undone")  # fmt: skip
        self._reload(store)
        return originals

    def cell_cut_by(self, field_index: int, outline: Sequence[tuple[float, float]]) -> Cell:
        """The cell awaiting review that an outline drawn on the field (field pixels) cuts in
        two: of those with part inside and part outside, the one with the most pixels inside.

        Raises:
            ReshapeError: The outline has fewer than three points, or leaves every cell whole.
        """
        points = np.asarray(outline, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3:
            raise ReshapeError("Draw an outline (three or more points) around one cell of a clump.")
        best, most = None, 0
        queue = set(self.queue())  # cells cut by the border are never counted: nothing to cut
        for cell in self.field_cells(field_index):
            if cell.key not in queue:
                continue
            mask = cell.mask()  # the cell's box, from its top-left corner
            inside = int((outline_mask(points - cell.bbox[:2], mask.shape) & mask).sum())
            if 0.05 * mask.sum() <= inside <= 0.95 * mask.sum() and inside > most:
                best, most = cell, inside
        if best is None:
            raise ReshapeError(
                "The outline cuts no cell: draw around one of the cells of a clump, so that part "
                "of the outlined clump is inside and part outside."
            )
        return best

    # ---- helpers -----------------------------------------------------------------------------
    def _field_mask(self, cell: Cell, local: np.ndarray) -> np.ndarray:
        image = self.fields[cell.field_index].image
        mask = np.zeros(image.shape[:2], bool)
        x0, y0, x1, y1 = cell.bbox
        mask[y0:y1, x0:x1] = local
        return mask

    def _live(self, field_index: int, cell_id: int) -> Cell:
        cell = self.cell(field_index, cell_id)
        if cell.label == CellLabel.REPLACED:
            raise ReshapeError(
                f"Cell {cell_id} was split or merged since you last looked (the field now "
                "shows its pieces): look at the field again, then correct what is left."
            )
        if cell.touches_border or cell.label == CellLabel.BORDER:  # its pieces would count
            raise ReshapeError(f"Cell {cell_id} is cut by the image edge or the field stop and "
                               "is never counted: there is nothing to split or merge.")  # fmt: skip
        return cell

    def _next_id(self, field_index: int) -> int:
        ids = [key[1] for key in self._cells if key[0] == field_index]
        return max(ids, default=0) + 1
