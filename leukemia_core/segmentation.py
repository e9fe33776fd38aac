"""Find white blood cells in a stained blood-smear field.

The field is first brought to the reference stain (:mod:`leukemia_core.stain`: white glass,
reference red-cell colour), so that one colour rule serves every microscope. The pipeline is
scale-aware: it then estimates the typical red-cell diameter from the image itself,
resizes the field so that red cells are :attr:`SegmentationParams.working_red_cell_diameter` pixels
wide, detects nuclei and whole cells there, and finally refines each cell's masks at full
resolution inside its own bounding box. Every size threshold is a multiple of the red-cell diameter,
so one parameter set serves fields from 224 px thumbnails to 5-megapixel camera frames.

Stages:
    1. background colour and foreground (cells vs. glass);
    2. red-cell diameter from the distance transform of the foreground;
    3. nucleus score (blue minus green: Romanowsky-stained chromatin is blue-purple, red cells and
       glass are not) thresholded per image; fragments of one lobulated nucleus are merged;
       touching nuclei are split by a watershed on their distance transform;
    4. whole cells by a seeded watershed in which nuclei, red cells and the glass compete;
    5. pieces of one cell rejoined (slabs; halves whose union is as round as they are),
       rejection of platelets and debris by size, of platelet clumps by size and ragged
       outline, and flagging of cells cut by the border.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from leukemia_core.clumps import (
    drop_platelet_clumps,
    merge_halves,
    merge_round_unions,
    merge_slabs,
    split_clump,
)
from leukemia_core.colour import nucleus_score
from leukemia_core.illumination import cut_by_surround, even_field
from leukemia_core.masks import fill_holes, smooth_mask, touches_border
from leukemia_core.resampling import full_resolution_box, resize, upsample_patch
from leukemia_core.scale import RedCellScale, check_rgb, measure_red_cells
from leukemia_core.stain import (
    REFERENCE_RED_CELL_OD,
    StainEstimate,
    estimate_stain,
    normalise_stain,
)
from leukemia_core.types import Segmentation

NO_RED_CELLS_NOTE = "No red cells found"  # how the note of a field with none starts


@dataclass(frozen=True)
class SegmentationParams:
    """Every tunable of :func:`segment_wbc`; sizes are in red-cell diameters unless noted.

    Attributes:
        red_cell_diameter_px: Known red-cell diameter in input pixels; None estimates it.
        working_red_cell_diameter: Red-cell diameter (px) at which detection runs. Smaller is
            faster; 24 keeps lobes of a neutrophil nucleus apart from the gaps between them.
        nucleus_threshold: Fixed threshold on the nucleus score (blue minus green, 0-255 scale);
            None picks one per image.
        min_nucleus_score: Lowest nucleus threshold an image may get; keeps a field without
            white cells from turning its most purple red cells into "nuclei".
        min_nucleus_area: Smallest nucleus (after merging lobes) kept, in red-cell areas;
            platelets are about 0.05-0.1.
        min_cell_area: Smallest whole cell kept, in red-cell areas of the *lower* red-cell
            size estimate (:class:`scale.RedCellScale`), so that a scale read
            too large (overlapping red cells) never removes a white cell. Giant platelets and
            platelet clumps, which take the nucleus colour, are smaller.
        lobe_merge_distance: Nucleus fragments closer than this belong to one cell.
        split_depth: Two touching nuclei are split when their distance-transform peaks stand
            this much (in red-cell diameters) above the neck between them.
        max_cytoplasm_width: Cytoplasm reaches at most this far beyond the nucleus.
        cytoplasm_blueness: A pixel is cytoplasm when its Lab b* lies this far below the field's
            median b* (see :func:`cytoplasm_score`).
        merge_max_nucleus_fraction: Touching pieces whose nucleus covers less than this of each
            are candidates for being one cytoplasm-rich cell (see :func:`clumps.merge_halves`)...
        merge_max_fraction_gap: ...whose nucleus fractions differ by at most this...
        merge_min_contact: ...and are joined when their shared border is at least this times the
            square root of the smaller piece's area.
        split_min_nucleus_fraction: Only cells whose nucleus fills at least this fraction are
            tried for splitting at full resolution (pressed blasts with scant cytoplasm).
        clump_split_depth: Like ``split_depth``, for the dark chromatin cores of pressed clumps.
        clump_round_solidity: Cells filling more than this fraction of their convex hull are
            round, hence one cell, and are never split (pale chromatin is texture, not a border).
        clump_dented_solidity: Below this the outline is so dented that it holds several cells;
            chromatin cores then need only half of ``clump_split_depth`` to part them.
        min_split_nucleus_area: Each part of a split must keep this much nucleus (red-cell areas).
        slab_contact: A piece meeting a neighbour along at least this times the square root of its
            area is a slice of that cell and rejoins it (:func:`clumps.merge_slabs`).
        round_union_margin: Two touching pieces whose union is at most this much less solid
            than the more solid piece are one round cell cut in two (pressed cells leave
            notches) and rejoin (:func:`clumps.merge_round_unions`); negative turns it off...
        round_union_contact: ...when their cut is at least this times the square root of the
            smaller piece's area.
        platelet_clump_area: Objects smaller than this (red-cell areas of the lower estimate)...
        platelet_clump_solidity: ...that fill less than this of their convex hull are platelet
            clumps or debris and are dropped (:func:`clumps.drop_platelet_clumps`).
        min_border_cell_area: A cell cut by the border must show at least this much area
            (red-cell areas); smaller slivers are dropped.
        border_margin_px: A cell within this many full-resolution pixels of the edge is flagged.
        normalise_stain: Bring the field to the reference stain before detection.
        reference_red_cell_od: The red-cell optical density (R, G, B) of the reference stain.
    """

    red_cell_diameter_px: float | None = None
    working_red_cell_diameter: float = 24.0
    nucleus_threshold: float | None = None
    min_nucleus_score: float = 30.0
    min_nucleus_area: float = 0.15
    min_cell_area: float = 0.4
    lobe_merge_distance: float = 0.12
    split_depth: float = 0.17
    max_cytoplasm_width: float = 0.45
    cytoplasm_blueness: float = 6.0
    merge_max_nucleus_fraction: float = 0.7
    merge_max_fraction_gap: float = 0.2
    merge_min_contact: float = 0.9
    split_min_nucleus_fraction: float = 0.7
    clump_split_depth: float = 0.2
    clump_round_solidity: float = 0.95
    clump_dented_solidity: float = 0.9  # two touching discs: about 0.85
    min_split_nucleus_area: float = 0.8
    slab_contact: float = 2.0
    round_union_margin: float = 0.01
    round_union_contact: float = 1.0
    platelet_clump_area: float = 1.0
    platelet_clump_solidity: float = 0.9
    min_border_cell_area: float = 0.5
    border_margin_px: int = 2
    normalise_stain: bool = True
    reference_red_cell_od: tuple[float, float, float] = REFERENCE_RED_CELL_OD


DEFAULT_PARAMS = SegmentationParams()


def segment_wbc(image: np.ndarray, params: SegmentationParams | None = None) -> Segmentation:
    """Segment every white blood cell of a stained smear field.

    Args:
        image: ``(H, W, 3)`` RGB uint8 field.
        params: Tunables; defaults to :data:`DEFAULT_PARAMS`.

    Returns:
        A :class:`Segmentation` whose label images have the input's height and width.

    Raises:
        SegmentationError: The input is not an RGB uint8 image.
    """
    params = params or DEFAULT_PARAMS
    check_rgb(image, "segment_wbc")
    image, outside, light_notes = even_field(image)  # an eyepiece's black corners: no cells
    stain, image, red_cells = _stain_and_scale(image, params)
    diameter, low_diameter = red_cells.diameter, red_cells.low_diameter
    if diameter is None:
        # Without red cells there is no scale and, in practice, no smear: a blank slide, a photo
        # of something else, or a single-cell crop (which needs no segmentation).
        empty = np.zeros(image.shape[:2], dtype=np.int32)
        note = (
            f"{NO_RED_CELLS_NOTE}, so this does not look like a blood smear field (blank slide, "
            "out of focus, or another kind of image). No white blood cells found. If these are "
            "images of one cell each, analyse them as single cells ('Single cells' on the Analyze "
            "page, --single-cells on the command line)."
        )
        return Segmentation(empty, empty.copy(), 0.0, 1.0, (), (*light_notes, note), stain)
    scale = min(1.0, params.working_red_cell_diameter / diameter)
    small = resize(image, scale)
    d_small = diameter * scale
    nuclei_small, threshold = _detect_nuclei(small, d_small, params)
    cells_small, reference_b = _grow_cells(small, nuclei_small, d_small, params)
    nuclei_small, cells_small = merge_halves(
        nuclei_small,
        cells_small,
        params.merge_max_nucleus_fraction,
        params.merge_max_fraction_gap,
        params.merge_min_contact,
    )
    nuclei, cells, border = _refine_full_resolution(
        image,
        nuclei_small,
        cells_small,
        scale,
        threshold,
        reference_b,
        diameter,
        params,
        min_cell_px=params.min_cell_area * np.pi * low_diameter**2 / 4,
    )
    boxes = ndi.find_objects(cells)  # one full-image pass for the three steps below
    nuclei, cells, border = merge_slabs(nuclei, cells, border, params.slab_contact, boxes)
    nuclei, cells, border = merge_round_unions(
        nuclei, cells, border, params.round_union_margin, params.round_union_contact, boxes
    )
    clump_px = params.platelet_clump_area * np.pi * low_diameter**2 / 4
    nuclei, cells, border = drop_platelet_clumps(
        nuclei, cells, border, clump_px, params.platelet_clump_solidity, boxes
    )
    if outside is not None:  # a cell the field stop cuts is a border cell
        border = tuple(sorted({*border, *cut_by_surround(cells, outside, params.border_margin_px)}))
    notes = light_notes
    if cells.max() == 0:
        notes += (
            "No white blood cells found. Check that this is a Romanowsky-stained (Wright, Giemsa, "
            "May-Grunwald) blood smear field with visible white cells.",
        )
    return Segmentation(
        nucleus_labels=nuclei,
        cell_labels=cells,
        red_cell_diameter_px=float(diameter),
        working_scale=float(scale),
        border_cell_ids=border,
        notes=notes,
        stain=stain,
        low_red_cell_diameter_px=float(low_diameter),
        red_cells_merged_share=red_cells.merged_share,
    )


def field_red_cell_diameter(image: np.ndarray, params: SegmentationParams | None = None) -> float:
    """The red-cell diameter :func:`segment_wbc` uses for this field (0.0 without red cells),
    measured as it measures it: on the field evened first (an eyepiece's black surround read
    red cells 8 times too large here, so a split's pieces were cropped far too small)."""
    evened = even_field(image)[0]
    return float(_stain_and_scale(evened, params or DEFAULT_PARAMS)[2].diameter or 0.0)


def _stain_and_scale(
    image: np.ndarray, params: SegmentationParams
) -> tuple[StainEstimate, np.ndarray, RedCellScale]:
    """The field's stain estimate, the field as segmented (normalised when asked), and its
    red-cell scale."""
    stain = estimate_stain(image, params.reference_red_cell_od)
    if params.normalise_stain:
        image = normalise_stain(image, stain)
    measured = measure_red_cells(image)
    if params.red_cell_diameter_px:  # the user's ruler; the merged share still warns of thick areas
        known = params.red_cell_diameter_px
        return stain, image, RedCellScale(known, known, measured.merged_share)
    return stain, image, measured


def _detect_nuclei(
    image: np.ndarray, diameter: float, params: SegmentationParams
) -> tuple[np.ndarray, float]:
    """Label nuclei at working resolution; returns labels and the score threshold used."""
    score = cv2.GaussianBlur(nucleus_score(image), (0, 0), max(0.5, diameter * 0.03))
    threshold = params.nucleus_threshold
    if threshold is None:
        threshold = _nucleus_threshold(score, params.min_nucleus_score)
    mask = score > threshold
    merge = max(1, round(params.lobe_merge_distance * diameter))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * merge + 1, 2 * merge + 1))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, disk).astype(bool)
    mask = fill_holes(mask)
    red_cell_area = np.pi * diameter**2 / 4
    mask = _remove_small(mask, params.min_nucleus_area * red_cell_area)
    return _split_touching(mask, diameter, params), float(threshold)


def _nucleus_threshold(score: np.ndarray, floor: float) -> float:
    """Otsu between the purple tail and everything else, never below ``floor``."""
    candidates = score[score > floor * 0.5]
    if candidates.size < 50 or np.ptp(candidates) < 1:
        return floor
    return max(float(threshold_otsu(candidates)), floor)


def _remove_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    return keep[labels]


def _split_touching(mask: np.ndarray, diameter: float, params: SegmentationParams) -> np.ndarray:
    """Label a nucleus mask, splitting touching nuclei at the necks between them.

    Works blob by blob so that the costly h-maxima transform only sees nucleus pixels.
    """
    blobs, _ = ndi.label(mask)
    labels = np.zeros(mask.shape, dtype=np.int32)
    depth = params.split_depth * diameter
    next_id = 1
    for index, box in enumerate(ndi.find_objects(blobs), start=1):
        box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        blob = blobs[box] == index
        distance = ndi.gaussian_filter(ndi.distance_transform_edt(blob), 1.0)
        parts = blob.astype(np.int32)
        if distance.max() > 2 * depth:  # big enough to hold two nuclei with a neck between
            markers, count = ndi.label(h_maxima(distance, depth))
            if count > 1:
                parts = watershed(-distance, markers, mask=blob)
        view = labels[box]
        view[parts > 0] = parts[parts > 0] + next_id - 1
        next_id += max(1, int(parts.max()))
    return labels


def cytoplasm_score(image: np.ndarray, reference_b: float | None = None) -> np.ndarray:
    """Per-pixel "blueness" against the field's dominant colour (Lab b*), float32.

    White-cell cytoplasm is bluish or lavender, red cells and glass are neutral to yellow-pink, so
    b* drops inside white cells. ``reference_b`` is the field's median b*; pass it when scoring a
    patch so that the patch is judged against the whole field.
    """
    b_star = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 2].astype(np.float32)
    if reference_b is None:
        reference_b = float(np.median(b_star))
    return reference_b - b_star


def _grow_cells(
    image: np.ndarray, nuclei: np.ndarray, diameter: float, params: SegmentationParams
) -> tuple[np.ndarray, float]:
    """Whole-cell territories at working resolution; returns labels and the field's median b*."""
    reference_b = float(np.median(cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 2]))
    if nuclei.max() == 0:
        return nuclei, reference_b
    sigma = max(0.5, 0.04 * diameter)
    blueness = cv2.GaussianBlur(cytoplasm_score(image, reference_b), (0, 0), sigma)
    distance = ndi.distance_transform_edt(nuclei == 0)
    reach = distance <= params.max_cytoplasm_width * diameter
    candidate = ((blueness > params.cytoplasm_blueness) & reach) | (nuclei > 0)
    # Flooding from the nuclei keeps only cytoplasm connected to a nucleus and splits touching
    # cells half-way between their nuclei.
    cells = watershed(distance, nuclei, mask=candidate).astype(np.int32)
    return cells, reference_b


def _refine_full_resolution(
    image: np.ndarray,
    nuclei_small: np.ndarray,
    cells_small: np.ndarray,
    scale: float,
    threshold: float,
    reference_b: float,
    diameter: float,
    params: SegmentationParams,
    min_cell_px: float,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Upsample each cell's territory, re-threshold it at full resolution, split pressed clumps.

    Parts too small to be white cells (platelets, debris, slivers at the field edge) are dropped
    here; returns nucleus labels, cell labels and the ids of cells cut by the border.
    """
    height, width = image.shape[:2]
    nuclei = np.zeros((height, width), dtype=np.int32)
    cells = np.zeros((height, width), dtype=np.int32)
    smooth = max(1, round(0.04 * diameter))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * smooth + 1, 2 * smooth + 1))
    red_cell_area = np.pi * diameter**2 / 4
    min_nucleus = params.min_nucleus_area * red_cell_area
    min_border_cell = params.min_border_cell_area * red_cell_area
    margin = max(1, params.border_margin_px)
    border: list[int] = []
    next_id = 1
    for index, box in enumerate(ndi.find_objects(cells_small), start=1):
        if box is None:
            continue
        rows, cols, small = full_resolution_box(box, scale, (height, width), cells_small.shape)
        territory = upsample_patch(cells_small[small] == index, rows, cols, small, scale)
        nucleus_hint = upsample_patch(nuclei_small[small] == index, rows, cols, small, scale)
        patch = image[rows, cols]
        nucleus = territory & (nucleus_score(patch) > threshold)
        nucleus = smooth_mask(nucleus | (nucleus_hint & territory), disk)
        cytoplasm = cytoplasm_score(patch, reference_b) > params.cytoplasm_blueness
        cell = (smooth_mask(territory & (cytoplasm | nucleus), disk) & territory) | nucleus
        parts = [(cell, nucleus)]
        if nucleus.sum() >= params.split_min_nucleus_fraction * max(1, cell.sum()):
            parts = split_clump(
                patch,
                cell,
                nucleus,
                diameter,
                params.min_split_nucleus_area * red_cell_area,
                params.clump_split_depth * diameter,
                params.clump_round_solidity,
                params.clump_dented_solidity,
            )
        for part_cell, part_nucleus in parts:
            area = part_cell.sum()
            if area < min_cell_px or part_nucleus.sum() < min_nucleus:
                continue
            on_border = touches_border(part_cell, rows, cols, height, width, margin)
            # A sliver of a cell at the field edge can be neither classified nor reviewed.
            if on_border and area < min_border_cell:
                continue
            cells[rows, cols][part_cell] = next_id
            nuclei[rows, cols][part_nucleus] = next_id
            if on_border:
                border.append(next_id)
            next_id += 1
    return nuclei, cells, tuple(border)
