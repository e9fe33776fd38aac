"""White-cell segmentation: exact answers on synthetic smears, bad inputs, real-data quality floors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import EveryCellABlast
from scipy import ndimage as ndi

from leukemia_core.clumps import (
    drop_platelet_clumps,
    merge_round_unions,
    merge_slabs,
    split_clump,
)
from leukemia_core.cropping import CROP_FIELD_RED_CELLS, crop_cells, draw_overlay
from leukemia_core.errors import SegmentationError
from leukemia_core.io import read_image
from leukemia_core.scale import estimate_red_cell_diameter
from leukemia_core.segmentation import SegmentationParams, segment_wbc
from leukemia_core.single_cell import single_cell_crop
from leukemia_core.synthetic import make_smear
from train.evaluate import segmentation as quality
from train.evaluate.fields import evaluate_cells_in_fields


def _centroids(labels: np.ndarray) -> list[tuple[float, float]]:
    out = []
    for index in range(1, int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == index)
        out.append((float(xs.mean()), float(ys.mean())))
    return out


def _assert_one_detection_per_wbc(smear, segmentation) -> None:
    """Each true white cell has exactly one detected centroid within 0.4 red-cell diameters."""
    detected = _centroids(segmentation.cell_labels)
    tolerance = 0.4 * smear.red_cell_diameter_px
    assert len(detected) == len(smear.wbcs), (len(detected), len(smear.wbcs))
    for cell in smear.wbcs:
        near = [
            p
            for p in detected
            if np.hypot(p[0] - cell.center[0], p[1] - cell.center[1]) < tolerance
        ]
        assert len(near) == 1, (cell, near)


@pytest.mark.parametrize("stain", ["wright", "giemsa", "pale"])
@pytest.mark.parametrize(
    ("diameter", "shape"), [(20.0, (480, 640)), (40.0, (480, 640)), (70.0, (1944, 2592))]
)
def test_finds_every_white_cell_at_any_scale_and_stain(stain, diameter, shape):
    smear = make_smear(
        *shape,
        n_wbc=5,
        n_touching_pairs=0,
        n_rbc=int(0.35 * shape[0] * shape[1] / diameter**2),
        red_cell_diameter_px=diameter,
        stain=stain,
        seed=2,
    )
    segmentation = segment_wbc(smear.image)
    _assert_one_detection_per_wbc(smear, segmentation)
    # Red cells and platelets are rejected: no detection away from a white cell.
    assert segmentation.n_cells == len(smear.wbcs)


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_estimates_red_cell_size_from_the_image(seed):
    smear = make_smear(480, 640, n_rbc=70, red_cell_diameter_px=40.0, seed=seed)
    assert estimate_red_cell_diameter(smear.image) == pytest.approx(40.0, rel=0.1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_red_cell_size_holds_in_a_thick_area(seed):
    """220 red cells overlap into one blob holding most of the red-cell area; its inscribed
    circle read 70-286 px for these 40 px cells before the confluent rule."""
    smear = make_smear(480, 640, n_rbc=220, red_cell_diameter_px=40.0, seed=seed)
    assert estimate_red_cell_diameter(smear.image) == pytest.approx(40.0, rel=0.15)


@pytest.mark.parametrize("seed", [0, 2])
def test_splits_touching_white_cells(seed):
    smear = make_smear(480, 640, n_wbc=4, n_touching_pairs=1, n_rbc=60, seed=seed)
    segmentation = segment_wbc(smear.image)
    _assert_one_detection_per_wbc(smear, segmentation)


def test_flags_cells_cut_by_the_border():
    smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, border_wbc=True, seed=1)
    segmentation = segment_wbc(smear.image)
    _assert_one_detection_per_wbc(smear, segmentation)
    border_truth = [c.center for c in smear.wbcs if c.touches_border]
    flagged = [_centroids(segmentation.cell_labels)[i - 1] for i in segmentation.border_cell_ids]
    assert len(flagged) == len(border_truth) == 1
    assert np.hypot(*np.subtract(flagged[0], border_truth[0])) < 0.5 * smear.red_cell_diameter_px


def test_masks_match_ground_truth():
    smear = make_smear(480, 640, n_wbc=4, n_touching_pairs=0, seed=3)
    segmentation = segment_wbc(smear.image)
    assert quality.dice(segmentation.cell_labels > 0, smear.cell_labels > 0) > 0.85
    assert quality.dice(segmentation.nucleus_labels > 0, smear.nucleus_labels > 0) > 0.8
    # Every nucleus lies inside its own cell.
    inside = segmentation.cell_labels[segmentation.nucleus_labels > 0]
    assert np.array_equal(inside, segmentation.nucleus_labels[segmentation.nucleus_labels > 0])


def test_crops_are_cell_on_black_and_centred():
    smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, seed=4)
    segmentation = segment_wbc(smear.image)
    cells = crop_cells(smear.image, segmentation, size=128)
    assert [c.cell_id for c in cells] == list(range(1, segmentation.n_cells + 1))
    for cell in cells:
        assert cell.crop.shape == (128, 128, 3)
        assert cell.crop[:4].max() == 0 and cell.crop[:, :4].max() == 0  # black margin
        ys, xs = np.nonzero(cell.crop.max(axis=2))
        assert abs(xs.mean() - 64) < 12 and abs(ys.mean() - 64) < 12
        assert 0 < cell.nucleus_area_px < cell.cell_area_px
        assert cell.mask().shape == (cell.bbox[3] - cell.bbox[1], cell.bbox[2] - cell.bbox[0])
    overlay = draw_overlay(smear.image, segmentation)
    assert overlay.shape == smear.image.shape and not np.array_equal(overlay, smear.image)


@pytest.mark.parametrize("diameter", [24.0, 40.0, 70.0])
def test_crops_keep_cell_size_relative_to_red_cells(diameter):
    """The crop spans CROP_FIELD_RED_CELLS red-cell diameters at any magnification."""
    smear = make_smear(int(diameter * 20), int(diameter * 26), n_wbc=4, n_touching_pairs=0,
                       red_cell_diameter_px=diameter, seed=7)  # fmt: skip
    segmentation = segment_wbc(smear.image)
    size = 120
    for cell in crop_cells(smear.image, segmentation, size=size):
        crop_area = np.count_nonzero(cell.crop.max(axis=2))
        pixels_per_red_cell = size / CROP_FIELD_RED_CELLS
        expected = (
            cell.cell_area_px * (pixels_per_red_cell / segmentation.red_cell_diameter_px) ** 2
        )
        assert crop_area == pytest.approx(expected, rel=0.15)


def test_single_cell_crop_of_a_crop_is_the_same_crop():
    """Cells already in the classifier domain pass through single-cell mode unchanged."""
    smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, seed=4)
    for cell in crop_cells(smear.image, segment_wbc(smear.image), size=128):
        again = single_cell_crop(cell.crop, size=128)
        assert again.method == "cutout"
        overlap = (again.crop.max(axis=2) > 0) == (cell.crop.max(axis=2) > 0)
        assert overlap.mean() > 0.97


def test_a_smear_field_given_as_a_single_cell_is_noted_and_sent_to_review():
    """A field among single cells (the upload box kept it) must not count as one cell."""
    from leukemia_core.pipeline import MODE_CELLS, analyze

    field = make_smear(480, 640, n_wbc=6, n_touching_pairs=0, seed=4)
    crop = single_cell_crop(field.image)
    assert crop.to_review and crop.method == "segmented"
    (note,) = [n for n in crop.notes if "more like a smear field" in n]
    assert note.startswith("this image shows 6 whole white cells")
    one = make_smear(480, 640, n_wbc=6, n_touching_pairs=0, seed=4)
    cutout = crop_cells(one.image, segment_wbc(one.image), size=128)[0].crop
    assert not single_cell_crop(cutout).to_review  # a cut-out cell is a cell
    analysis = analyze([field.image, cutout], EveryCellABlast(), mode=MODE_CELLS)
    assert [c.label for c in analysis.cells] == ["uncertain", "blast"]
    assert any("more like a smear field" in n for n in analysis.fields[0].notes)
    assert not analysis.fields[1].notes


@pytest.mark.data
def test_real_single_cell_crops_are_not_taken_for_fields(shared_data):
    """ALL-IDB2 crops show their cell and at most a neighbour or two whole."""

    crops = sorted((shared_data / "all_idb2" / "images").glob("*.tif"))
    assert len(crops) >= 100
    notes = [n for p in crops for n in single_cell_crop(read_image(p).rgb).notes]
    assert not [n for n in notes if "more like a smear field" in n]


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.full((480, 640, 3), 235, np.uint8), id="blank slide"),
        pytest.param(
            np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8), id="noise"
        ),
        pytest.param(
            np.dstack([np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))] * 3),
            id="grey ramp",
        ),
    ],
)
def test_no_cells_gives_an_empty_result_with_a_note(image):
    segmentation = segment_wbc(image)
    assert segmentation.n_cells == 0
    assert segmentation.cell_labels.shape == image.shape[:2]
    assert any("No white blood cells" in note for note in segmentation.notes)


def test_a_single_cell_crop_analysed_as_a_field_says_how_to_analyse_it_as_a_cell():
    crop = read_image(
        Path(__file__).parents[1] / "samples" / "cells" / "UID_H6_1_1_hem.png"
    ).rgb  # C-NMC: cell on black
    (note,) = [n for n in segment_wbc(crop).notes if "No red cells found" in n]
    assert "'Single cells' on the Analyze page" in note and "--single-cells" in note
    assert "SegmentationParams" not in note  # a library setting no page or flag offers


def test_a_photo_of_something_else_finds_no_cells():
    from skimage import data

    segmentation = segment_wbc(data.chelsea())  # a cat
    assert segmentation.n_cells == 0
    assert any("No white blood cells" in note for note in segmentation.notes)


def test_a_field_where_all_white_cells_touch():
    smear = make_smear(400, 400, n_wbc=6, n_touching_pairs=3, n_rbc=20, seed=7)
    _assert_one_detection_per_wbc(smear, segment_wbc(smear.image))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((100, 100), np.uint8), r"\(H, W, 3\) RGB"),
        (np.zeros((100, 100, 4), np.uint8), r"\(H, W, 3\) RGB"),
        (np.zeros((100, 100, 3), np.float32), "uint8"),
        (np.zeros((1, 500, 3), np.uint8), "too small"),
        ("not an array", "RGB array"),
    ],
)
def test_bad_arrays_raise_a_clear_error(image, message):
    with pytest.raises(SegmentationError, match=message):
        segment_wbc(image)


def test_params_are_honoured():
    smear = make_smear(480, 640, n_wbc=3, n_touching_pairs=0, seed=8)
    known = segment_wbc(smear.image, SegmentationParams(red_cell_diameter_px=40.0))
    assert known.red_cell_diameter_px == 40.0
    strict = segment_wbc(smear.image, SegmentationParams(nucleus_threshold=250.0))
    assert strict.n_cells == 0


# Quality floors on the real public datasets (issue acceptance); CI runs these.


@pytest.fixture(scope="module")
def bccd_quality(shared_data):
    return quality.evaluate_wbc(shared_data / "bccd")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize(
    ("figure", "floor"),
    [("wbc_recall", 0.99), ("wbc_precision", 0.97), ("nucleus_dice", 0.92), ("cell_dice", 0.85)],
)
def test_bccd_quality_floor(bccd_quality, figure, floor):
    """Issue 17's targets; precision 0.965 before the low red-cell estimate left ridges out."""
    assert bccd_quality[figure] >= floor


@pytest.mark.data
@pytest.mark.slow
def test_all_idb1_blast_detection(shared_data):
    result = quality.evaluate_smears(shared_data / "all_idb1")
    assert result["blast_detection_recall"] >= 0.98


@pytest.mark.data
def test_all_idb2_centre_cell_masks(shared_data):
    result = quality.evaluate_crops(shared_data / "all_idb2")
    assert result["cell_dice"] >= 0.90


@pytest.mark.data
@pytest.mark.slow
def test_all_idb2_cells_stay_whole_in_their_fields(shared_data):
    """A blast cut in two is counted twice: expert outlines must come back as one cell each.

    The red-cell scale sizes every crop: fields of one camera must agree (one of them, at a
    higher magnification, rightly does not), and a crop's own estimate should match its field's.
    Before white cells were left out of the threshold, fields crowded with blasts came out at
    half scale (0.95 of fields agreed) and crops agreed 0.66 of the time.
    """
    result = evaluate_cells_in_fields(shared_data / "all_idb1", shared_data / "all_idb2")
    assert result["n_cells"] >= 150
    assert result["split_rate"] <= 0.03, result
    assert result["cell_dice_in_field"] >= 0.90, result
    assert result["field_scale_within_25pct"] >= 0.97, result
    assert result["crop_scale_within_25pct"] >= 0.68, result


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_a_slab_sliced_off_a_cell_rejoins_it_while_touching_cells_stay_apart():
    shape = (120, 300)
    columns = np.mgrid[:120, :300][1]
    cells = np.zeros(shape, np.int32)
    one_cell = _disc(shape, (60, 60), 40)
    cells[one_cell] = 1
    cells[one_cell & (columns > 88)] = 2  # a 12 px slab cut off along 55 px of border
    cells[_disc(shape, (60, 160), 30)] = 3  # a round cell alone
    cells[_disc(shape, (60, 209), 20) & (cells == 0)] = 4  # pressed against cell 3
    cells[_disc(shape, (60, 275), 15)] = 5  # alone, at the right border
    nuclei = cells.copy()
    boxes = ndi.find_objects(cells)
    nuclei, merged, border = merge_slabs(nuclei, cells.copy(), (2, 5), 2.0, boxes)
    assert boxes == ndi.find_objects(merged), "the boxes follow the relabelling"
    assert set(np.unique(merged[one_cell])) == {1}, "the slab joins its cell"
    assert merged[60, 160] != merged[60, 209], "pressed round cells stay apart"
    assert list(np.unique(merged)) == [0, 1, 2, 3, 4], "ids stay consecutive"
    assert np.array_equal(nuclei, merged), "nuclei follow their cells"
    unchanged = ~one_cell
    assert np.array_equal(merged[unchanged] > 0, cells[unchanged] > 0)
    assert border == (1, int(merged[60, 275]))
    again = merge_slabs(merged.copy(), merged.copy(), border, 2.0)[1]
    assert np.array_equal(again, merged), "nothing left to join"


def test_a_slab_between_two_cells_joins_one_of_them_not_both():
    cells = np.zeros((40, 84), np.int32)
    cells[:, :40], cells[:, 40:44], cells[:, 44:] = 1, 2, 3  # cell | thin strip | cell
    merged = merge_slabs(cells.copy(), cells.copy(), (), 2.0)[1]
    assert set(np.unique(merged)) == {1, 2}, "two cells, the strip inside one of them"
    assert merged[20, 20] != merged[20, 60]


def test_a_round_cell_cut_in_two_rejoins_while_pressed_cells_stay_apart():
    shape = (140, 420)
    columns = np.mgrid[:140, :420][1]
    cells = np.zeros(shape, np.int32)
    round_cell = _disc(shape, (70, 70), 45)
    cells[round_cell] = 1
    cells[round_cell & (columns > 75)] = 2  # cut along a chord: two pieces, no notch between
    cells[_disc(shape, (70, 200), 35)] = 3
    cells[_disc(shape, (70, 262), 35) & (cells == 0)] = 4  # pressed against cell 3: notches
    cells[_disc(shape, (70, 380), 40)] = 5  # alone, at the right border
    boxes = ndi.find_objects(cells)
    nuclei, merged, border = merge_round_unions(
        cells.copy(), cells.copy(), (2, 5), 0.01, 1.0, boxes
    )
    assert boxes == ndi.find_objects(merged), "the boxes follow the relabelling"
    assert set(np.unique(merged[round_cell])) == {1}, "the halves of the round cell rejoin"
    assert merged[70, 200] != merged[70, 262], "pressed cells stay apart"
    assert list(np.unique(merged)) == [0, 1, 2, 3, 4] and np.array_equal(nuclei, merged)
    assert border == (1, 4), "border ids follow the renumbering"
    off = merge_round_unions(cells.copy(), cells.copy(), (), -1.0, 1.0)[1]
    assert np.array_equal(off, cells), "a negative margin turns the step off"
    halves = np.where(round_cell, np.where(columns > 75, 2, 1), 0).astype(np.int32)
    _, whole, _ = merge_round_unions(halves.copy(), halves.copy(), (), 0.01, 1.0)
    assert np.array_equal(whole, round_cell.astype(np.int32)), "the last id can merge away"


def test_small_ragged_objects_are_dropped_as_platelet_clumps_round_and_large_cells_kept():
    shape = (140, 400)
    cells = np.zeros(shape, np.int32)
    cells[_disc(shape, (70, 40), 22)] = 1  # a round lymphocyte-sized cell
    cells[65:76, 90:131] = cells[50:91, 105:116] = 2  # platelets clumped in a ragged cross
    cells[_disc(shape, (70, 200), 30) | _disc(shape, (70, 250), 30)] = 3  # a large bilobed cell
    for centre in ((10, 330), (30, 338), (8, 350)):  # a ragged object cut by the top border
        cells[_disc(shape, centre, 7)] = 4
    cells[_disc(shape, (70, 350), 18)] = 5
    max_area = np.pi * 30**2  # a red cell 60 px wide
    boxes = ndi.find_objects(cells)
    nuclei, kept, border = drop_platelet_clumps(
        cells.copy(), cells.copy(), (4,), max_area, 0.8, boxes
    )
    assert boxes == ndi.find_objects(kept), "the boxes follow the relabelling"
    assert not kept[50:91, 90:131].any(), "the platelet clump is gone"
    assert list(np.unique(kept)) == [0, 1, 2, 3, 4], "ids stay consecutive"
    assert kept[70, 40] == 1 and kept[70, 200] == kept[70, 250] == 2
    assert border == (3,) and kept[10, 330] == 3, "cut objects are left to the border rules"
    assert kept[70, 350] == 4 and np.array_equal(nuclei, kept)
    same = drop_platelet_clumps(kept.copy(), kept.copy(), border, max_area, 0.8)
    assert np.array_equal(same[1], kept) and same[2] == border, "nothing left to drop"


@pytest.mark.parametrize(
    ("centres", "expected_parts"),
    [([(60, 60)], 1), ([(60, 38), (60, 82)], 2)],
    ids=["round-blast-with-pale-line", "two-pressed-blasts"],
)
def test_clump_splitter_cuts_dented_clumps_not_round_cells(centres, expected_parts):
    """Both cells carry the same pale vertical line at x=60; only the dented outline is cut."""
    shape, radius = (120, 120), 26 if len(centres) == 1 else 24
    cell = np.zeros(shape, bool)
    for centre in centres:
        cell |= _disc(shape, centre, radius)
    patch = np.full((*shape, 3), (230, 200, 200), np.uint8)
    patch[cell] = (90, 40, 140)  # dark purple chromatin
    patch[:, 58:63][cell[:, 58:63]] = (150, 120, 190)  # a paler line across it
    parts = split_clump(patch, cell, cell.copy(), 40.0, 0.8 * np.pi * 20**2, 8.0)
    assert len(parts) == expected_parts
    assert sum(int(c.sum()) for c, _ in parts) == int(cell.sum())
    if expected_parts == 2:  # the cut runs down the neck, so each part holds one disc
        for (part, _), centre in zip(sorted(parts, key=lambda p: np.nonzero(p[0])[1].mean()),
                                     centres, strict=True):  # fmt: skip
            assert part[centre], "each part must keep its own disc centre"
            assert (part & _disc(shape, centre, radius - 4)).sum() >= 0.9 * _disc(
                shape, centre, radius - 4
            ).sum()


def test_fields_command_says_what_is_missing(tmp_path, capsys):
    from PIL import Image

    from train.evaluate.__main__ import main

    idb1, idb2 = tmp_path / "idb1", tmp_path / "idb2"
    (idb1 / "images").mkdir(parents=True)
    args = ["fields", "--all-idb1", str(idb1), "--all-idb2", str(idb2)]
    assert main(args) == 2
    assert "has no images/ folder" in capsys.readouterr().err
    (idb2 / "images").mkdir(parents=True)
    assert main(args) == 2
    assert "No images" in capsys.readouterr().err
    Image.new("RGB", (64, 64), (200, 180, 190)).save(idb2 / "images" / "Im001_1.tif")
    assert main(args) == 2  # a crop, but no source_fields.csv pointing into idb1
    assert "no ALL-IDB2 crop" in capsys.readouterr().err


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize(("figures", "share"), [("other_microscope", 0.99), ("bccd_quality", 0.97)])
def test_red_cell_size_agrees_with_the_annotators_red_cell_boxes(request, figures, share):
    """The scale every size rule rests on, against the expert red-cell boxes of each field.

    Before the glass-only guard and the confluent rule, 5 deepbionet fields (tinted lamp) and 9
    BCCD fields (thick areas, agglutinates) read 1.5-6.7 times the median box side."""
    result = request.getfixturevalue(figures)
    assert result["n_fields_with_red_cell_boxes"] >= 250
    assert result["red_cell_scale_within"] >= share, result["red_cell_scale_outliers"]


@pytest.fixture(scope="module")
def other_microscope(shared_data):
    return quality.evaluate_wbc(shared_data / "deepbionet")


@pytest.mark.data
@pytest.mark.slow
def test_another_microscope_is_found_after_stain_normalisation(other_microscope):
    """deepbionet: bluish and greenish fields; before stain normalisation precision was 0.56."""
    assert other_microscope["wbc_recall"] >= 0.98, other_microscope
    assert other_microscope["wbc_precision"] >= 0.94, other_microscope
    assert other_microscope["n_wbc_boxes"] >= 300


@pytest.mark.data
@pytest.mark.slow
def test_another_microscope_precision_target(other_microscope):
    """Issue 17's floor; 0.949 before the platelet-clump rule."""
    assert other_microscope["wbc_precision"] >= 0.95


@pytest.mark.data
@pytest.mark.slow
def test_platelet_clump_rule_drops_false_detections_only(shared_data, other_microscope):
    """Against the same fields without the rule: fewer detections, not one expert cell fewer."""
    without = quality.evaluate_wbc(
        shared_data / "deepbionet", SegmentationParams(platelet_clump_area=0.0)
    )

    def found(result):
        return round(result["wbc_recall"] * result["n_wbc_boxes"])

    assert found(other_microscope) == found(without)
    assert other_microscope["n_detections"] <= without["n_detections"] - 3


def test_ridges_of_red_cell_colour_do_not_shrink_the_low_red_cell_estimate():
    """On BCCD a granulocyte's pink cytoplasm and the open pallor rings of border cells gave
    narrow distance peaks that pulled the low estimate to 0.43 of the typical one (00382),
    and single platelets then passed the white-cell size floor. Open arcs drawn as wide as
    those ridges over a synthetic field must not move it far."""
    import cv2

    from leukemia_core.scale import measure_red_cells
    from leukemia_core.synthetic import STAINS

    smear = make_smear(n_wbc=0, n_touching_pairs=0, n_rbc=20, n_platelets=0,
                       red_cell_diameter_px=40, seed=3)  # fmt: skip
    image, rng = smear.image.copy(), np.random.default_rng(0)
    colour = tuple(int(c) for c in STAINS["wright"]["rbc"])
    for x, y, start, end in zip(rng.uniform(20, 620, 20), rng.uniform(20, 460, 20),
                                rng.uniform(0, 90, 20), rng.uniform(220, 260, 20), strict=True):  # fmt: skip
        cv2.ellipse(image, (int(x), int(y)), (26, 26), 0, int(start), int(end), colour, 13)
    clean, ridged = measure_red_cells(smear.image), measure_red_cells(image)
    assert 36 <= clean.low_diameter <= clean.diameter <= 42
    assert ridged.low_diameter >= 0.85 * clean.low_diameter  # the old rule read 0.41 of it
    assert ridged.low_diameter <= ridged.diameter  # still the lower of the two
