"""Tests of leukemia_core.synthetic: the generated fields and their ground truth agree."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from leukemia_core.synthetic import STAINS, SyntheticSmear, make_demo_smear, make_smear
from leukemia_core.types import Segmentation

KERNEL = np.ones((3, 3), np.uint8)


@pytest.fixture(scope="module")
def smear() -> SyntheticSmear:
    return make_smear(n_wbc=5, n_touching_pairs=2, border_wbc=True, seed=11)


def _dilate(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), KERNEL).astype(bool)


def test_same_seed_same_field_and_other_seed_another():
    first, second = make_smear(seed=5), make_smear(seed=5)
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.cell_labels, second.cell_labels)
    assert np.array_equal(first.nucleus_labels, second.nucleus_labels)
    assert first.cells == second.cells
    other = make_smear(seed=6)
    assert not np.array_equal(first.image, other.image)
    assert first.cells != other.cells


def test_image_and_labels_have_the_documented_types(smear):
    assert smear.image.shape == (480, 640, 3) and smear.image.dtype == np.uint8
    for labels in (smear.cell_labels, smear.nucleus_labels):
        assert labels.shape == (480, 640) and labels.dtype == np.int32


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"wbc": 4, "rbc": 60, "platelet": 6}),
        ({"n_wbc": 7, "n_rbc": 0, "n_platelets": 0, "border_wbc": True}, {"wbc": 8}),
        (
            {"n_wbc": 0, "n_touching_pairs": 0, "n_rbc": 25, "n_platelets": 3},
            {"rbc": 25, "platelet": 3},
        ),
    ],
)
def test_counts_of_each_kind_equal_the_parameters(kwargs, expected):
    field = make_smear(seed=2, **kwargs)
    kinds = {kind: sum(c.kind == kind for c in field.cells) for kind in ("wbc", "rbc", "platelet")}
    assert kinds == {"wbc": 0, "rbc": 0, "platelet": 0} | expected
    assert int(field.cell_labels.max()) == kinds["wbc"]
    assert field.cells[: kinds["wbc"]] == field.wbcs  # white cells come first, in label order


@pytest.mark.parametrize(
    ("n_wbc", "fraction", "n_blasts"), [(4, 0.5, 2), (5, 0.0, 0), (5, 1.0, 5), (6, 0.34, 2)]
)
def test_blast_fraction_is_a_count(n_wbc, fraction, n_blasts):
    field = make_smear(n_wbc=n_wbc, n_touching_pairs=0, blast_fraction=fraction, seed=4)
    assert sum(cell.is_blast for cell in field.wbcs) == n_blasts
    assert all(cell.is_blast == (cell.wbc_type == "blast") for cell in field.wbcs)
    assert {cell.wbc_type for cell in field.wbcs} <= {"blast", "lymphocyte", "neutrophil"}


def test_white_cells_are_inside_except_the_border_one(smear):
    h, w = smear.cell_labels.shape
    edge = np.zeros((h, w), bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    assert smear.border_cell_ids == (len(smear.wbcs),)
    for k, cell in enumerate(smear.wbcs, start=1):
        x, y = cell.center
        inside = (
            cell.radius_px <= x <= w - 1 - cell.radius_px
            and cell.radius_px <= y <= h - 1 - cell.radius_px
        )
        cut = bool((smear.cell_labels[edge] == k).any())
        assert inside != cell.touches_border, (k, cell)
        assert cut == cell.touches_border, (k, cell)


def test_labels_match_the_cell_list(smear):
    ids = set(np.unique(smear.cell_labels)) - {0}
    assert ids == set(range(1, len(smear.wbcs) + 1))
    assert set(np.unique(smear.nucleus_labels)) - {0} == ids
    for k, cell in enumerate(smear.wbcs, start=1):
        mask, nucleus = smear.cell_labels == k, smear.nucleus_labels == k
        assert not (nucleus & ~mask).any()  # the nucleus lies inside its own cell
        assert 0.1 < nucleus.sum() / mask.sum() < 0.9
        if cell.touches_border:
            continue
        ys, xs = np.nonzero(mask)
        assert math.dist((xs.mean(), ys.mean()), cell.center) < 1.0, k
        assert mask.sum() == pytest.approx(math.pi * cell.radius_px**2, rel=0.05)


def test_blasts_have_a_large_nucleus(smear):
    field = make_smear(n_wbc=8, n_touching_pairs=0, n_rbc=20, seed=3)
    for k, cell in enumerate(field.wbcs, start=1):
        ratio = (field.nucleus_labels == k).sum() / (field.cell_labels == k).sum()
        assert (ratio > 0.55) == cell.is_blast, (k, cell.wbc_type, ratio)


def test_neutrophil_lobes_overlap_into_one_nucleus():
    seen = 0
    for seed in range(6):
        field = make_smear(n_wbc=6, n_touching_pairs=0, n_rbc=0, n_platelets=0, seed=seed)
        for k, cell in enumerate(field.wbcs, start=1):
            if cell.wbc_type == "neutrophil":
                n_parts, _ = cv2.connectedComponents((field.nucleus_labels == k).astype(np.uint8))
                assert n_parts - 1 == 1, (seed, k)
                seen += 1
    assert seen >= 5


def test_touching_pairs_touch_while_their_nuclei_stay_apart(smear):
    assert smear.touching_pairs == ((1, 2), (3, 4))
    paired = {k for pair in smear.touching_pairs for k in pair}
    n = len(smear.wbcs)
    for a in range(1, n + 1):
        for b in range(a + 1, n + 1):
            grown = _dilate(smear.cell_labels == a)
            touches = bool((grown & (smear.cell_labels == b)).any())
            assert touches == ((a, b) in smear.touching_pairs), (a, b)
            assert not (_dilate(smear.nucleus_labels == a) & (smear.nucleus_labels == b)).any()
    for a, b in smear.touching_pairs:
        first, second = smear.wbcs[a - 1], smear.wbcs[b - 1]
        distance = math.dist(first.center, second.center)
        assert distance == pytest.approx(0.95 * (first.radius_px + second.radius_px))
    assert paired == {1, 2, 3, 4}


def test_sizes_scale_with_the_red_cell_diameter():
    small = make_smear(240, 320, red_cell_diameter_px=20.0, seed=9)
    large = make_smear(480, 640, red_cell_diameter_px=40.0, seed=9)
    for a, b in zip(small.cells, large.cells, strict=True):
        assert (a.kind, a.wbc_type, a.is_blast) == (b.kind, b.wbc_type, b.is_blast)
        assert b.radius_px == pytest.approx(2 * a.radius_px)
        assert b.nucleus_radius_px == pytest.approx(2 * a.nucleus_radius_px)
    area_small = np.bincount(small.cell_labels.ravel())[1:]
    area_large = np.bincount(large.cell_labels.ravel())[1:]
    assert area_large / area_small == pytest.approx(np.full(len(area_small), 4.0), rel=0.08)
    wbc_diameters = [2 * c.radius_px / 40.0 for c in large.wbcs]
    assert all(1.2 <= ratio <= 2.0 for ratio in wbc_diameters)
    platelets = [2 * c.radius_px / 40.0 for c in large.cells if c.kind == "platelet"]
    assert all(0.2 <= ratio <= 0.3 for ratio in platelets)


@pytest.mark.parametrize(("size", "diameter"), [((240, 320), 12.0), ((1200, 1600), 100.0)])
def test_extreme_scales_work(size, diameter):
    field = make_smear(*size, red_cell_diameter_px=diameter, border_wbc=True, seed=1)
    assert int(field.cell_labels.max()) == 5
    assert field.red_cell_diameter_px == diameter


def test_a_full_camera_frame_is_generated_quickly():
    start = time.perf_counter()
    field = make_smear(1944, 2592, n_wbc=10, n_rbc=400, n_platelets=30, seed=0)
    elapsed = time.perf_counter() - start
    assert field.image.shape == (1944, 2592, 3)
    assert int(field.cell_labels.max()) == 10
    assert elapsed < 20.0  # ~0.5 s on one free core; generous for a shared CI machine


@pytest.mark.parametrize("stain", sorted(STAINS))
def test_stains_look_like_a_stained_smear(stain):
    field = make_smear(stain=stain, n_wbc=4, seed=8)
    grey = field.image.astype(float).mean(axis=2)
    nucleus, cell = field.nucleus_labels > 0, field.cell_labels > 0
    rbc = np.zeros_like(cell)
    for c in field.cells:
        if c.kind == "rbc":
            cv2.circle(rbc.view(np.uint8), (round(c.center[0]), round(c.center[1])), 3, 1, -1)
    background = ~_dilate(cell | rbc) & (grey > 0)
    # Background is bright, red cells darker, nuclei darkest; the nucleus is purple (blue > green).
    assert np.median(grey) > 180
    assert grey[nucleus].mean() < grey[cell & ~nucleus].mean() < grey[background].mean()
    assert grey[rbc & ~cell].mean() < np.median(grey)
    red, green, blue = (field.image[..., i][nucleus].mean() for i in range(3))
    assert blue > green and red > green


def test_stains_differ_and_pale_is_lighter():
    means = {name: make_smear(stain=name, seed=8).image.mean(axis=(0, 1)) for name in STAINS}
    assert means["pale"].mean() > means["wright"].mean()
    assert not np.allclose(means["wright"], means["giemsa"], atol=1.0)


def test_ground_truth_is_a_segmentation(smear):
    truth = smear.ground_truth()
    assert isinstance(truth, Segmentation)
    assert truth.n_cells == len(smear.wbcs)
    assert truth.border_cell_ids == smear.border_cell_ids
    assert truth.cell_labels is smear.cell_labels


def test_demo_smear():
    demo = make_demo_smear()
    assert demo.image.shape == (768, 1024, 3)
    assert len(demo.wbcs) == 9 and demo.border_cell_ids == (9,)
    blasts = sum(cell.is_blast for cell in demo.wbcs)
    assert 0 < blasts < len(demo.wbcs)
    assert np.array_equal(demo.image, make_demo_smear().image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"stain": "papanicolaou"},
            "stain must be one of wright, giemsa, pale, got 'papanicolaou'",
        ),
        ({"n_wbc": 2, "n_touching_pairs": 2}, "2 touching pairs need n_wbc >= 4"),
        ({"n_wbc": -1}, "n_wbc must be a whole number of 0 or more, got -1"),
        ({"n_rbc": 2.5}, "n_rbc must be a whole number of 0 or more, got 2.5"),
        ({"n_platelets": True}, "n_platelets must be a whole number"),
        ({"blast_fraction": 1.5}, "blast_fraction must be between 0 and 1, got 1.5"),
        ({"red_cell_diameter_px": 2}, "red_cell_diameter_px must be between 6 and 200, got 2"),
        ({"red_cell_diameter_px": "40"}, "red_cell_diameter_px must be a number, got '40'"),
        ({"height": 10}, "height must be between 32 and 10000, got 10"),
        ({"height": 64, "width": 64, "n_wbc": 6}, r"Could not place 6 white cells .* 64x64 image"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_smear(**kwargs)
