"""Cells cut out once and kept between jobs: the same crops as cutting them again, read back
only while the image and the cutting code are unchanged."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from leukemia_core.fingerprints import code_fingerprint
from leukemia_core.models.inputs import InputSpec
from train.crop_cache import CropCache, ReadyCrops
from train.data import load_allidb2
from train.fit import app_crop, load_crops
from train.records import LabelledCrop

SPEC = InputSpec(64, "unit")


@pytest.fixture(scope="module")
def real_cells(shared_data):
    """Three real ALL-IDB2 crops (two classes)."""
    records = sorted(load_allidb2(shared_data / "all_idb2").records, key=lambda r: r.path.name)
    chosen = records[:2] + [r for r in records if r.label != records[0].label][:1]
    return chosen


def test_a_later_job_reads_the_very_crops_the_first_one_cut(real_cells, tmp_path):
    root = tmp_path / ".crop_cache"
    first = CropCache(root)
    cut = load_crops(real_cells, SPEC, cut=first.crop)
    assert (first.misses, first.hits) == (3, 0)
    assert len(list(root.rglob("*.png"))) == 3
    later = CropCache(root)  # a new job, same code
    again = load_crops(real_cells, SPEC, cut=later.crop)
    assert (later.misses, later.hits) == (0, 3)
    plain = load_crops(real_cells, SPEC)
    np.testing.assert_array_equal(cut, plain)
    np.testing.assert_array_equal(again, plain)  # lossless: not one value moved


def test_a_changed_image_is_cut_again(real_cells, tmp_path):
    image = tmp_path / "cell.tif"
    shutil.copy(real_cells[0].path, image)
    record = LabelledCrop(image, real_cells[0].label, "g", "lab")
    cache = CropCache(tmp_path / ".crop_cache")
    before = cache.crop(record)
    kept = image.stat()
    shutil.copy(real_cells[2].path, image)  # the lab replaced the file, keeping its time
    os.utime(image, ns=(kept.st_atime_ns, kept.st_mtime_ns))  # as cp -p or rsync -a do
    assert image.stat().st_size == kept.st_size  # ALL-IDB2 crops: one size, so only bytes tell
    after = cache.crop(record)
    assert cache.misses == 2 and cache.hits == 0
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, app_crop(record))


def test_crops_of_other_code_are_removed_and_a_damaged_entry_is_cut_again(real_cells, tmp_path):
    root = tmp_path / ".crop_cache"
    stale = root / "0123456789abcdef" / "ab"
    stale.mkdir(parents=True)
    (stale / "ab.png").write_bytes(b"from an older release")
    cache = CropCache(root)
    assert not stale.parent.exists() and cache.folder.name == code_fingerprint()
    record = real_cells[1]
    cache.crop(record)
    (entry,) = cache.folder.rglob("*.png")
    entry.write_bytes(b"\x89PNG half written")  # a disk error, say
    np.testing.assert_array_equal(cache.crop(record), app_crop(record))
    assert cache.misses == 2 and entry.stat().st_size > 1000  # cut again and stored whole


def test_a_missing_image_gets_the_readers_message_not_a_cache_error(tmp_path):
    record = LabelledCrop(tmp_path / "gone.png", "blast", "g", "lab")
    with pytest.raises(Exception, match=r"gone\.png") as caught:
        CropCache(tmp_path / ".crop_cache").crop(record)
    with pytest.raises(type(caught.value)):
        app_crop(record)


def test_a_job_over_cells_an_earlier_job_cut_out_knows_it_before_loading(real_cells, tmp_path):
    """The progress shares need it before the first cell is read (the bar must not go back)."""
    cache = CropCache(tmp_path / "cache")
    assert not ReadyCrops(real_cells, cache).warm and not ReadyCrops(real_cells).warm
    cache.crop(real_cells[0])
    assert ReadyCrops(real_cells, cache).warm
