"""Split and merge in review: real fused clumps, counts, audit trail, undo, signed cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EveryCellABlast

from leukemia_core.accounts import Role, User
from leukemia_core.errors import PossibleClumpError
from leukemia_core.io import read_image
from leukemia_core.pipeline import analyze
from leukemia_core.report import case_report_html
from leukemia_core.reshape import ReshapeError, merge_masks, split_masks
from leukemia_core.review import Review
from leukemia_core.store import CaseStore
from leukemia_core.store_rows import CaseSignedError
from leukemia_core.types import CellLabel
from train.evaluate.segmentation import read_xyc

ANA = User("Ana Reviewer", frozenset({Role.REVIEWER, Role.SIGNER}))


def _discs(centres, radius=24, shape=(100, 140)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.logical_or.reduce([(yy - y) ** 2 + (xx - x) ** 2 <= radius**2 for x, y in centres])


def test_split_into_two_cuts_at_the_neck_of_two_pressed_cells():
    clump = _discs([(45, 50), (90, 50)])
    left, right = sorted(split_masks(clump, 2), key=lambda m: np.nonzero(m)[1].mean())
    assert left[50, 45] and right[50, 90] and not (left & right).any()
    assert (left | right).sum() == clump.sum()
    neck = np.nonzero(left[50])[0].max()
    assert 60 <= neck <= 75  # the cut runs through the neck, not through a cell


def test_split_with_the_pixels_cuts_between_the_nuclei_of_a_large_and_a_small_cell():
    # A large cell pressed against a small one: the outline's neck is at x = 95 (where the two
    # circles cross), off the middle of the clump, where a cut by shape alone falls.
    yy, xx = np.mgrid[:120, :160]
    big, small = (xx - 60) ** 2 + (yy - 60) ** 2 <= 40**2, (xx - 108) ** 2 + (yy - 60) ** 2 <= 24**2
    big_nucleus = (xx - 55) ** 2 + (yy - 60) ** 2 <= 22**2
    small_nucleus = (xx - 112) ** 2 + (yy - 60) ** 2 <= 13**2
    clump = big | small
    pixels = np.full((120, 160, 3), (235, 225, 225), np.uint8)  # glass
    pixels[clump] = (200, 170, 200)  # cytoplasm: blue barely above green
    pixels[big_nucleus | small_nucleus] = (120, 60, 170)  # chromatin: blue far above green
    first, second = sorted(
        split_masks(clump, 2, image=pixels), key=lambda m: np.nonzero(m)[1].mean()
    )
    assert first[big_nucleus].all() and second[small_nucleus].all()
    assert 90 <= np.nonzero(first[60])[0].max() <= 97  # at the neck, not through the large cell
    assert (first | second).sum() == clump.sum() and not (first & second).any()


def test_split_along_a_line_and_merge_back():
    clump = _discs([(45, 50), (90, 50)])
    a, b = split_masks(clump, line=((67, 0), (67, 99)))
    assert a.sum() + b.sum() == clump.sum()
    merged = merge_masks([a, b])
    assert merged[clump].all() and (merged & ~clump).sum() < 0.02 * clump.sum()
    with pytest.raises(ReshapeError, match="do not touch"):
        merge_masks([_discs([(30, 50)], 10), _discs([(110, 50)], 10)])
    with pytest.raises(ReshapeError, match="2 to"):
        split_masks(clump, 9)


def test_split_by_an_outline_drawn_around_one_of_two_pressed_cells():
    clump = _discs([(45, 50), (90, 50)])
    around_left = [(20, 20), (68, 22), (70, 80), (22, 78)]  # a rough lasso, not a circle
    inside, outside = split_masks(clump, line=around_left)
    assert inside[50, 45] and outside[50, 90] and not (inside & outside).any()
    assert (inside | outside).sum() == clump.sum()
    with pytest.raises(ReshapeError, match=r"empty piece.*outline around one of its cells"):
        split_masks(clump, line=[(0, 0), (5, 0), (5, 5)])  # drawn beside the cell
    with pytest.raises(ReshapeError, match=r"two or more \(x, y\) points"):
        split_masks(clump, line=[(1, 2, 3)])
    # drawn just inside the left cell's edge (a walk's lasso was refused so): the rim comes
    # along, and the border follows the neck
    rim = [(45 + 21 * np.cos(a), 50 + 21 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 40)]
    drawn, rest = split_masks(clump, line=rim)
    left = _discs([(45, 50)])
    assert (drawn & left).sum() / (drawn | left).sum() > 0.93 and drawn[50, 22]
    deeper = [(45 + 19 * np.cos(a), 50 + 19 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 40)]
    drawn, _ = split_masks(clump, line=deeper)  # a fifth of the way in: the rim still follows
    assert (drawn & left).sum() / (drawn | left).sum() > 0.93  # (a walk left a crescent behind)
    assert rest[50, 90] and 64 <= np.nonzero(drawn[50])[0].max() <= 72
    # around the middle cell of a chain of three: the rest would fall in two, losing a cell
    chain = _discs([(30, 50), (67, 50), (104, 50)], 20)
    with pytest.raises(ReshapeError, match=r"in 2 separate parts.*end of the clump"):
        split_masks(chain, line=[(52, 20), (82, 20), (82, 80), (52, 80)])


@pytest.fixture
def fused(shared_data, tmp_path):
    """ALL-IDB1 Im013_1: expert blasts the segmentation outlines as one cell."""
    folder = shared_data / "all_idb1"
    review = Review(analyze([read_image(folder / "images" / "Im013_1.jpg").rgb], None),
                    sample_id="IDB-13")  # fmt: skip
    store = CaseStore(tmp_path / "cases.sqlite3")
    review.save(store, user=ANA)
    points = read_xyc(folder / "xyc" / "Im013_1.xyc")
    return review, store, points


def _holder(review, x, y):
    for cell in review.cells:
        x0, y0, x1, y1 = cell.bbox
        if x0 <= x < x1 and y0 <= y < y1 and cell.mask()[int(y) - y0, int(x) - x0]:
            return cell
    return None


@pytest.mark.data
def test_splitting_a_fused_clump_of_a_real_field(fused):
    review, store, points = fused
    clump = _holder(review, 976, 549)
    inside = [p for p in points if _holder(review, *p) is clump]
    assert len(inside) >= 2  # pressed blasts, one outline: the failure split exists for
    with pytest.raises(PossibleClumpError, match=r"Split it first .* or give it blast again"):
        review.relabel(store, *clump.key, "blast", user=ANA)  # it would count 2 blasts as 1
    assert not review.cell(*clump.key).reviewed
    review.relabel(store, *clump.key, "blast", user=ANA, as_one_cell=True)  # then split
    clump = review.cell(*clump.key)
    n_before = len(review.cells)
    pieces = review.split(store, *clump.key, user=ANA, parts=len(inside),
                          labeller=EveryCellABlast())  # fmt: skip
    assert len(review.cells) == n_before + len(inside) - 1
    assert {_holder(review, *p).key for p in inside} == {c.key for c in pieces}
    assert all(c.origin == f"split of {clump.cell_id}" and c.awaits_review for c in pieces)
    # classified like the others, but the call on a piece is the reviewer's: none is counted
    # as a blast on the model's word (a key press accepting it would count one blast twice)
    assert all(c.blast_probability == 0.95 and c.label == CellLabel.UNCERTAIN for c in pieces)
    because = review.sent_to_review_because(pieces[0])
    assert because == f"a reviewer made it (split of {clump.cell_id}): label it yourself"
    record = store.load_case(review.case_id)
    assert record.altered == ()
    last = record.audit[-(len(inside) + 1) :]
    assert [a.action for a in last] == ["split"] * (len(inside) + 1)
    assert last[0].to_label == CellLabel.REPLACED and "split into cells" in last[0].note
    assert last[0].note.endswith(f"by its nuclei: cell {clump.cell_id} set aside")  # and how
    # each row names the cell it is about (4 rows read alike in a walk)
    assert [a.note.rsplit(": ", 1)[1] for a in last[1:]] == [f"cell {c.cell_id} made"
                                                             for c in pieces]  # fmt: skip
    # Counts follow: the replaced cell is neither counted nor left to review.
    assert review.n_unreviewed == sum(c.label != CellLabel.BORDER for c in review.cells)
    review.undo_reshape(store, *pieces[0].key, user=ANA)
    assert len(review.cells) == n_before and _holder(review, 976, 549).key == clump.key
    back = review.cell(*clump.key)  # as it was before the split: its label and its review
    assert (back.label, back.reviewed) == (CellLabel.BLAST, True)
    assert store.load_case(review.case_id).audit[-1].action == "undo split"


@pytest.mark.data
def test_a_drawn_outline_cuts_one_blast_out_of_a_fused_clump(fused):
    review, store, points = fused
    clump = _holder(review, 976, 549)
    target = (976, 549)
    others = [p for p in points if _holder(review, *p) is clump and p != target]
    assert others  # the expert blasts the outline must leave outside
    radius = 0.35 * min(np.hypot(x - target[0], y - target[1]) for x, y in others) * 2
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    lasso = [(target[0] + radius * np.cos(a), target[1] + radius * np.sin(a)) for a in angles]
    assert review.cell_cut_by(0, lasso).key == clump.key
    with pytest.raises(ReshapeError, match="cuts no cell"):
        review.cell_cut_by(0, [(5, 5), (25, 5), (25, 25)])  # glass in the corner
    cut_out, rest = review.split(store, *clump.key, user=ANA, line=lasso)
    assert _holder(review, *target).key == cut_out.key
    assert {_holder(review, *p).key for p in others} == {rest.key}
    assert store.load_case(review.case_id).audit[-1].action == "split"
    assert "around a drawn outline: cell " in store.load_case(review.case_id).audit[-1].note


@pytest.mark.data
def test_merge_and_a_signed_case_refuses_both(fused):
    review, store, _ = fused
    clump = _holder(review, 976, 549)
    a, b = review.split(store, *clump.key, user=ANA, parts=2)
    merged = review.merge(store, [a.key, b.key], user=ANA)
    assert merged.origin == f"merge of {a.cell_id}+{b.cell_id}"
    assert merged.cell_area_px == pytest.approx(clump.cell_area_px, rel=0.05)
    for cell in review.cells:
        if cell.label != CellLabel.BORDER:
            review.relabel(store, *cell.key, "normal", user=ANA)
    assert review.sign(store, user=ANA)
    with pytest.raises(CaseSignedError):
        review.split(store, *merged.key, user=ANA, parts=2)
    with pytest.raises(CaseSignedError):
        review.undo_reshape(store, *merged.key, user=ANA)


@pytest.mark.data
def test_the_cells_a_split_and_a_merge_make_keep_their_heatmap_overlay_in_the_record(fused):
    review, store, _ = fused
    clump = _holder(review, 976, 549)
    made = []

    def inverted(crops):  # stands in for Grad-CAM: an overlay the test can recompute
        made.append(len(crops))
        return [255 - crop for crop in crops]

    pieces = review.split(store, *clump.key, user=ANA, parts=2, explainer=inverted)
    merged = review.merge(store, [p.key for p in pieces], user=ANA, explainer=inverted)
    assert made == [2, 1]  # one batched call per split or merge, for its new cells only
    stored = {c.key: c for c in store.load_case(review.case_id).cells}
    assert set(stored) >= {merged.key}
    np.testing.assert_array_equal(stored[merged.key].overlay, 255 - stored[merged.key].crop)
    replaced = {c.key: c for c in store.load_case(review.case_id).replaced}
    for piece in pieces:  # kept with the replaced pieces too, for the audit trail's report
        np.testing.assert_array_equal(replaced[piece.key].overlay, 255 - replaced[piece.key].crop)
    untouched = next(c for c in review.cells if not c.origin)
    assert stored[untouched.key].overlay is None  # saved without heatmaps: none made up
    # Labelling a reviewer-made cell is no disagreement with the model (a walk saw every split
    # counted as "model: uncertain -> reviewer: blast" in the report's agreement figures).
    review.relabel(store, *merged.key, "blast", user=ANA)
    assert not review.cell(*merged.key).changed_by_reviewer and review.n_changed == 0
    page = case_report_html(store.load_case(review.case_id))
    assert "0 of the " in page and " cells the model called were changed by the reviewer" in page
    assert "1 was made by the reviewer&#x27;s splits or merges" in page
    assert "made by the reviewer (merge of" in page and "model: uncertain →" not in page


@pytest.mark.data
def test_a_cell_cut_by_the_border_is_neither_split_nor_merged(fused):
    """Splitting a border cell (never counted) gave pieces that joined the review and the
    count."""
    review, store, _ = fused
    border = next(c for c in review.cells if c.touches_border)
    with pytest.raises(ReshapeError, match="cut by the image edge or the field stop"):
        review.split(store, *border.key, user=ANA, parts=2)
    neighbour = next(c for c in review.cells if not c.touches_border)
    with pytest.raises(ReshapeError, match="never counted"):
        review.merge(store, [border.key, neighbour.key], user=ANA)
    assert store.load_case(review.case_id).audit[-1].action == "created"


def test_a_piece_within_the_segmentations_border_margin_is_a_border_cell():
    from leukemia_core.masks import touches_border  # the rule new_cells applies to its pieces

    mask = np.zeros((50, 50), bool)
    mask[1:10, 20:30] = True  # one pixel in from the edge: inside the 2-pixel margin
    whole = (slice(0, 50), slice(0, 50), 50, 50)
    assert touches_border(mask, *whole, 2) and not touches_border(mask, *whole, 1)


@pytest.mark.data
def test_split_into_three_gives_each_of_three_pressed_cells_its_piece(fused):
    """Im013_1's clump is three round cells, the darkest below the nuclei's level: split into
    three, no piece holds two cells and none is a sliver (a walk found a sliver beside the top
    cell and both lower cells in one piece)."""
    review, store, points = fused
    clump = _holder(review, 976, 549)
    pieces = review.split(store, *clump.key, user=ANA, parts=3)
    areas = np.array([c.cell_area_px for c in pieces]) / clump.cell_area_px
    assert areas.max() < 0.45 and areas.min() > 0.2  # about a third each
    inside = [p for p in points if clump.bbox[0] <= p[0] < clump.bbox[2]
              and clump.bbox[1] <= p[1] < clump.bbox[3]]  # fmt: skip
    owners = {_holder(review, *p).key for p in inside if _holder(review, *p) in pieces}
    assert len(owners) == 2  # the two expert blasts apart


@pytest.mark.data
def test_the_numbers_of_a_clumps_pieces_stay_apart_in_the_field_view(fused):
    """Pieces of a split share the top of the old outline: their numbers (the field view's
    click targets) must not sit on one spot, as two did after a walk's split into 4."""
    from ui.figures import BADGE_GAP, badge_points

    review, store, _ = fused
    pieces = review.split(store, *_holder(review, 976, 549).key, user=ANA, parts=4)
    field = review.fields[0]
    gap = BADGE_GAP * max(field.width, field.height)
    at = badge_points(review.field_cells(0), gap)
    points = np.array([at[c.key] for c in pieces])
    apart = np.linalg.norm(points[:, None] - points[None], axis=2)[np.triu_indices(len(pieces), 1)]
    assert apart.min() >= 0.5 * gap  # at most half covered: both seen and clickable
    for piece in pieces:  # each number on its own cell's outline
        assert np.min(np.linalg.norm(piece.outline - np.array(at[piece.key]), axis=1)) < 1e-6


@pytest.mark.data
def test_an_undo_under_a_later_split_is_refused_so_no_cell_is_counted_twice(fused):
    review, store, _ = fused
    clump = _holder(review, 976, 549)
    first, second = review.split(store, *clump.key, user=ANA, parts=2)
    review.split(store, *first.key, user=ANA, parts=2)  # a piece split again
    n_cells = len(review.cells)
    # Reviving the clump beside the later pieces would count its blasts twice over.
    with pytest.raises(ReshapeError, match=r"came from a later split or merge of this split's"):
        review.undo_reshape(store, *second.key, user=ANA)
    with pytest.raises(ReshapeError, match=f"Cell {first.cell_id} is no longer in the case"):
        review.undo_reshape(store, *first.key, user=ANA)
    assert len(review.cells) == n_cells and clump.key not in {c.key for c in review.cells}
    later = next(c for c in review.cells if c.origin == f"split of {first.cell_id}")
    review.undo_reshape(store, *later.key, user=ANA)  # newest first, then the older one
    review.undo_reshape(store, *second.key, user=ANA)
    assert _holder(review, 976, 549).key == clump.key
    with pytest.raises(ReshapeError, match="two or more different cells"):
        review.merge(store, [clump.key, clump.key], user=ANA)


@pytest.mark.data
def test_a_split_withdraws_a_first_signature_on_the_record(fused, monkeypatch):
    monkeypatch.setenv("LEUKEMIA_SECOND_SIGNER_AT_PERCENT", "20")
    review, store, _ = fused
    for cell in review.cells:
        if cell.label != CellLabel.BORDER:
            review.relabel(store, *cell.key, "blast", user=ANA, as_one_cell=True)  # 100%
    assert not review.sign(store, user=ANA)
    assert review.first_signed_by == ANA.name
    review.split(store, *_holder(review, 976, 549).key, user=ANA, parts=2)
    assert review.first_signed_by is None
    actions = [a.action for a in store.load_case(review.case_id).audit]
    assert actions[-1] == "first signature withdrawn"


@pytest.mark.data
def test_split_into_n_separates_the_blasts_of_every_fused_clump_of_all_idb1(shared_data):
    """Every ALL-IDB1 cell outlined around two or more expert blasts, split into that many from
    its pixels, gives each blast its own piece; touching cells merged back and split again come
    back as they were (median of the worse piece's IoU; 0.943 by shape alone, 0.967 with the
    nuclei, 124 pairs, 2026-12-06)."""
    from scipy import ndimage as ndi

    from train.evaluate.segmentation import iter_smears

    fused, worse_iou = 0, []
    for _, rgb, seg, points, _ in iter_smears(shared_data / "all_idb1"):
        labels = seg.cell_labels
        holders = {}
        for x, y in points:
            if labels[int(y), int(x)]:
                holders.setdefault(int(labels[int(y), int(x)]), []).append((x, y))
        for box_index, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None:
                continue
            cell, pixels, (y0, x0) = (
                labels[box] == box_index,
                rgb[box],
                (box[0].start, box[1].start),
            )
            inside = holders.get(box_index, [])
            if len(inside) >= 2:
                fused += 1
                pieces = split_masks(cell, len(inside), image=pixels)
                owners = {next(k for k, p in enumerate(pieces) if p[int(y) - y0, int(x) - x0])
                          for x, y in inside}  # fmt: skip
                assert len(owners) == len(inside)
        grown = ndi.grey_dilation(labels, size=3)
        pairs = zip(labels[labels > 0], grown[labels > 0], strict=True)
        touching = {tuple(sorted(pair)) for pair in pairs if pair[1] and pair[0] != pair[1]}
        for a, b in touching:
            box = ndi.find_objects(np.isin(labels, (a, b)).astype(np.int32))[0]
            first, second = labels[box] == a, labels[box] == b
            try:
                p, q = split_masks(merge_masks([first, second]), 2, image=rgb[box])
            except ReshapeError:  # refused (a piece in two parts): a failed split
                worse_iou.append(0.0)
                continue
            iou = lambda m, t: (m & t).sum() / (m | t).sum()  # noqa: E731
            worse_iou.append(max(min(iou(p, first), iou(q, second)),
                                 min(iou(p, second), iou(q, first))))  # fmt: skip
    assert fused >= 3 and len(worse_iou) >= 100
    assert np.median(worse_iou) >= 0.95
