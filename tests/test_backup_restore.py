"""Backups and restores of the case database from the server's shell, as a lab runs them."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from test_store import _SCHEMA_V1, new_case

from leukemia_core.__main__ import main
from leukemia_core.accounts import Accounts
from leukemia_core.store import CaseStore
from leukemia_core.store_backup import restore_database
from leukemia_core.store_rows import CaseStoreError


@pytest.fixture
def store(tmp_path, monkeypatch) -> CaseStore:
    path = tmp_path / "db" / "cases.sqlite3"
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(path))
    return CaseStore(path)


def test_a_mistyped_database_path_is_refused_not_backed_up_empty(store, tmp_path, monkeypatch,
                                                                  capsys):  # fmt: skip
    new_case(store, [["normal", "blast"]], sample_id="S-1")
    Accounts(store.path).add_user("ana", "a long password", ["admin"])
    assert main(["backup", str(tmp_path / "good.sqlite3")]) == 0
    said = capsys.readouterr().out
    assert "1 sample in 1 case version (0 signed), 1 account" in said
    typo = tmp_path / "nodir" / "cases.sqlte3"
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(typo))
    assert main(["backup", str(tmp_path / "empty.sqlite3")]) == 2
    assert "No case database at" in capsys.readouterr().err
    assert main(["users", "list"]) == 2 and main(["users", "disable", "ana"]) == 2
    assert "LEUKEMIA_CASE_DB" in capsys.readouterr().err
    assert not typo.parent.exists() and not (tmp_path / "empty.sqlite3").exists()


def test_users_list_on_a_database_without_accounts_says_so(store, capsys):
    assert main(["users", "list"]) == 0
    assert "no accounts yet" in capsys.readouterr().err


def _leave_a_crashed_writers_wal(database: Path) -> None:
    """What a killed process leaves: committed changes only in ``-wal``, not yet folded in."""
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE written_after_the_backup (x)")
    conn.commit()
    kept = {s: Path(f"{database}{s}").read_bytes() for s in ("-wal", "-shm")}
    conn.close()  # a clean close folds the -wal in and deletes it; a crash would not
    for suffix, data in kept.items():
        Path(f"{database}{suffix}").write_bytes(data)


def test_restore_sets_the_crashed_database_aside_whole_and_puts_the_backup_in_place(
    store, tmp_path, capsys
):
    before = new_case(store, [["normal"]], sample_id="S-BEFORE")
    store.sign_case(before, reviewer="S. Sig")
    assert main(["backup", str(tmp_path / "backup.sqlite3")]) == 0
    new_case(store, [["blast"]], sample_id="S-AFTER")
    _leave_a_crashed_writers_wal(store.path)

    assert main(["restore", str(tmp_path / "backup.sqlite3")]) == 0
    said = capsys.readouterr().out
    assert "1 sample in 1 case version (1 signed)" in said and "before-restore" in said
    restored = CaseStore(store.path)
    assert [c.sample_id for c in restored.list_cases()] == ["S-BEFORE"]
    assert restored.load_case(before).altered == ()  # its audit chain intact
    with sqlite3.connect(store.path) as conn:  # the stale -wal was not replayed onto it
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "written_after_the_backup" not in tables
    (aside,) = store.path.parent.glob("cases.sqlite3.before-restore-*[0-9]")
    assert Path(f"{aside}-wal").is_file()  # set aside together with its file
    with closing(sqlite3.connect(aside)) as conn:  # it opens with its own -wal: nothing lost
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "written_after_the_backup" in tables
    old = CaseStore(aside)
    assert sorted(c.sample_id for c in old.list_cases()) == ["S-AFTER", "S-BEFORE"]


def test_two_restores_in_a_row_keep_both_databases_they_replaced(store, tmp_path):
    new_case(store, [["normal"]], sample_id="S-ORIGINAL")
    store.backup(tmp_path / "one.sqlite3")
    new_case(store, [["normal"]], sample_id="S-LATER")
    first = restore_database(tmp_path / "one.sqlite3", store.path)
    second = restore_database(tmp_path / "one.sqlite3", store.path)  # the same second
    assert first.set_aside[0] != second.set_aside[0]
    assert sorted(c.sample_id for c in CaseStore(first.set_aside[0]).list_cases()) == [
        "S-LATER", "S-ORIGINAL"]  # fmt: skip


def test_a_restore_that_cannot_put_the_copy_in_place_leaves_the_database_as_it_was(
    store, tmp_path, monkeypatch
):
    import leukemia_core.store_backup as store_backup

    new_case(store, [["normal"]], sample_id="S-LIVE")
    store.backup(tmp_path / "b.sqlite3")
    real = os.replace

    def refuse_the_copy(source, target):
        if str(source).endswith(".restoring"):
            raise PermissionError(13, "Permission denied")
        return real(source, target)

    monkeypatch.setattr(store_backup.os, "replace", refuse_the_copy)
    with pytest.raises(CaseStoreError, match="the database was left as it was"):
        restore_database(tmp_path / "b.sqlite3", store.path)
    assert [c.sample_id for c in CaseStore(store.path).list_cases()] == ["S-LIVE"]
    assert sorted(p.name for p in store.path.parent.iterdir()
                  if "before-restore" in p.name or "restoring" in p.name) == []  # fmt: skip


def test_a_backup_on_read_only_storage_is_restored_and_left_untouched(store, tmp_path):
    """A backup is one self-contained file (no -wal), read without writing into or beside it.
    (As root the folder's mode is not enforced; what is written beside the file is checked.)"""
    new_case(store, [["normal"]], sample_id="S-1")
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    backup = store.backup(shelf / "b.sqlite3")
    written = backup.read_bytes()
    shelf.chmod(0o555)
    backup.chmod(0o444)
    try:
        restored = restore_database(backup, store.path)
    finally:
        shelf.chmod(0o755)
    assert restored.contents["samples"] == 1
    assert backup.read_bytes() == written and sorted(p.name for p in shelf.iterdir()) == [
        "b.sqlite3"]  # fmt: skip


def test_a_restore_into_a_missing_folder_blames_the_folder_not_the_backup(store, tmp_path):
    store.backup(tmp_path / "b.sqlite3")
    with pytest.raises(CaseStoreError, match=r"folder .*nodir does not exist or cannot be written"):
        restore_database(tmp_path / "b.sqlite3", tmp_path / "nodir" / "cases.sqlite3")


def test_restore_refuses_what_is_not_a_backup_and_changes_nothing(store, tmp_path, capsys):
    new_case(store, [["normal"]], sample_id="S-1")
    before = store.path.read_bytes()
    text = tmp_path / "notes.sqlite3"
    text.write_text("not a database")
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    for bad, words in ((text, "cannot be read as a database"),
                       (other, "not a case database"),
                       (tmp_path / "missing.sqlite3", "No backup file")):  # fmt: skip
        assert main(["restore", str(bad)]) == 2
        assert words in capsys.readouterr().err
    assert store.path.read_bytes() == before
    assert not list(store.path.parent.glob("*before-restore*"))
    assert not list(store.path.parent.glob("*.restoring"))


def test_restore_of_the_database_onto_itself_is_refused(store):
    with pytest.raises(CaseStoreError, match="is the case database itself"):
        restore_database(store.path, store.path)


def test_a_backup_of_the_first_release_is_restored_and_migrated(store, tmp_path):
    old = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.executescript(_SCHEMA_V1)
        conn.executescript(
            "BEGIN; INSERT INTO cases VALUES ('c1', 1, NULL, 'S-OLD', 'open', "
            "'2026-01-01T00:00:00', 'tech', 'old-model', 'sha', '{}', NULL, NULL); COMMIT;"
        )
    restored = restore_database(old, store.path)
    assert restored.contents == {"samples": 1, "case_versions": 1, "signed": 0, "accounts": 0}
    assert CaseStore(store.path).load_case("c1").sample_id == "S-OLD"


def test_the_database_its_side_files_and_backups_are_readable_by_their_owner_only(store, tmp_path):
    """They hold patient ids, images and password hashes; the server may have other users."""
    new_case(store, [["normal", "blast"]], sample_id="S-1")
    side = [store.path.with_name(store.path.name + s) for s in ("-wal", "-shm")]
    assert [p.stat().st_mode & 0o777 for p in [store.path, *side] if p.exists()] == [0o600] * (
        1 + sum(p.exists() for p in side)
    )
    backup = store.backup(tmp_path / "copy.sqlite3")
    assert backup.stat().st_mode & 0o777 == 0o600
    loose = tmp_path / "loose.sqlite3"  # a database an admin made readable keeps its mode
    loose.touch(mode=0o640)
    loose.chmod(0o640)
    CaseStore(loose)
    assert loose.stat().st_mode & 0o777 == 0o640


def test_a_backup_that_passes_the_checks_but_does_not_open_puts_the_database_back(store, tmp_path):
    """Two tables named cases and audit passed; the file did not open, and the working
    database was left renamed aside, so the app could no longer start."""
    from leukemia_core.store_schema import SCHEMA_VERSION

    before = store.contents()
    bad = tmp_path / "not-a-backup.sqlite3"
    with closing(sqlite3.connect(bad)) as conn:
        conn.execute("CREATE TABLE cases (id INTEGER)")
        conn.execute("CREATE TABLE audit (id INTEGER)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    with pytest.raises(CaseStoreError, match=r"does not open as a case database.*put back"):
        restore_database(bad, store.path)
    assert CaseStore(store.path, create=False).contents() == before
    assert not [p for p in store.path.parent.iterdir() if "before-restore" in p.name]


def test_a_backup_to_a_folder_it_cannot_write_blames_the_target_not_the_database(
    store, tmp_path, monkeypatch
):
    """A write-protected stick gave a traceback that said the case database could not be
    written."""
    from leukemia_core import store_reads

    new_case(store, [["blast", "normal"]])
    stick = tmp_path / "stick"
    stick.mkdir()
    real_access = os.access
    monkeypatch.setattr(store_reads.os, "access",
                        lambda path, mode: Path(path) != stick and real_access(path, mode))  # fmt: skip
    with pytest.raises(store_reads.CaseInputError, match=r"cannot be written in .*stick"):
        store.backup(stick / "cases.sqlite3")
    assert list(stick.iterdir()) == []


def test_a_change_in_flight_while_a_backup_is_restored_is_refused_not_lost(store, tmp_path):
    """A signature written while the restore put the backup in place was reported done and
    kept only in the database set aside."""
    case_id = new_case(store, [["normal"]], sample_id="S-1")
    store.backup(tmp_path / "backup.sqlite3")
    with (
        pytest.raises(CaseStoreError, match=r"was replaced \(restored from a backup\) while"),
        store._transaction(write=True) as conn,
    ):
        conn.execute("UPDATE cases SET comment = 'late' WHERE case_id = ?", (case_id,))
        restore_database(tmp_path / "backup.sqlite3", store.path)
    assert store.load_case(case_id).comment == ""
    store.set_case_details(case_id, reviewer="R", comment="again")  # done again: it holds
    assert store.load_case(case_id).comment == "again"


def test_a_restore_says_what_the_database_it_replaced_held_and_to_keep_it(store, tmp_path, capsys):
    new_case(store, [["normal"]], sample_id="S-1")
    assert main(["backup", str(tmp_path / "backup.sqlite3")]) == 0
    new_case(store, [["normal"]], sample_id="S-2")
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "backup.sqlite3")]) == 0
    said = capsys.readouterr().out
    assert "the database it replaced held 2 samples in 2 case versions" in said
    assert "so keep it" in said and "delete" not in said
    assert "nobody can log in" in said  # the backup held no account


def test_another_programs_database_or_an_empty_file_is_never_made_a_case_database(tmp_path):
    lims = tmp_path / "lims.sqlite3"
    with closing(sqlite3.connect(lims)) as conn:
        conn.execute("CREATE TABLE specimens (id)")
        conn.commit()
    before = lims.read_bytes()
    for create in (True, False):
        with pytest.raises(CaseStoreError, match="another program's SQLite database"):
            CaseStore(lims, create=create)
    assert lims.read_bytes() == before and not Path(f"{lims}-wal").exists()
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    with pytest.raises(CaseStoreError, match="Only an empty file is at"):
        CaseStore(empty, create=False)


def test_a_newer_database_is_refused_as_it_was_found(tmp_path):
    newer = tmp_path / "newer.sqlite3"
    with closing(sqlite3.connect(newer)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.execute("CREATE TABLE cases (x)")
        conn.commit()
    before = newer.read_bytes()
    with pytest.raises(CaseStoreError, match="newer than"):
        CaseStore(newer)
    assert newer.read_bytes() == before  # not switched to WAL first


def test_a_damaged_database_says_to_restore_a_backup_not_a_traceback(store):
    new_case(store, [["normal"]] * 1, sample_id="S-1")
    for i in range(30):  # pages enough that a later one can be damaged
        new_case(store, [["normal"] * 20], sample_id=f"S-{i + 2}")
    data = bytearray(store.path.read_bytes())
    page = 4096
    for start in range(3 * page, len(data), page):
        data[start : start + 64] = b"\xff" * 64
    store.path.write_bytes(bytes(data))
    with pytest.raises(CaseStoreError, match=r"is damaged.*restore the latest backup"):
        for summary in store.list_cases():
            store.load_case(summary.case_id)


def test_a_damaged_backup_is_called_damaged_not_blamed_on_the_disk(store, tmp_path):
    for i in range(30):
        new_case(store, [["normal"] * 20], sample_id=f"S-{i}")
    store.backup(tmp_path / "backup.sqlite3")
    data = bytearray((tmp_path / "backup.sqlite3").read_bytes())
    for start in range(3 * 4096, len(data), 4096):
        data[start : start + 64] = b"\xff" * 64
    (tmp_path / "backup.sqlite3").write_bytes(bytes(data))
    before = store.path.read_bytes()
    with pytest.raises(CaseStoreError, match=r"backup\.sqlite3 is damaged .*older backup") as said:
        restore_database(tmp_path / "backup.sqlite3", store.path)
    assert "disk space" not in str(said.value)
    assert store.path.read_bytes() == before


@pytest.mark.parametrize("left", ["world-readable file", "link"])
def test_a_backup_never_writes_through_what_is_left_at_its_scratch_name(store, tmp_path, left):
    """An empty 0644 `<target>.partial` gave a world-readable backup, password hashes and all;
    a link there sent the whole database into another account's file."""
    Accounts(store.path).add_user("ana", "a long password", ["admin"])
    target = tmp_path / "nightly.sqlite3"
    partial = tmp_path / "nightly.sqlite3.partial"
    elsewhere = tmp_path / "elsewhere"
    if left == "link":
        elsewhere.touch(mode=0o666)
        partial.symlink_to(elsewhere)
    else:
        partial.touch()
        partial.chmod(0o644)
    written = store.backup(target)
    assert written.is_file() and not written.is_symlink()
    assert written.stat().st_mode & 0o777 == 0o600 and not partial.exists()
    assert not elsewhere.exists() or elsewhere.stat().st_size == 0


def test_a_scratch_file_another_account_left_is_named_not_blamed_on_disk_space(
    store, tmp_path, monkeypatch
):
    """In a shared folder (sticky /tmp) another account's `<target>.partial` cannot be
    removed: the message blamed the disk's free space."""
    from leukemia_core import store_reads

    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store_reads, "new_private_file", refused)
    with pytest.raises(store_reads.CaseInputError) as raised:
        store.backup(tmp_path / "nightly.sqlite3")
    said = str(raised.value)
    assert "may not write or replace" in said and "nightly.sqlite3.partial" in said
    assert "free space" not in said
    assert not (tmp_path / "nightly.sqlite3").exists()


def test_a_backup_leaves_an_older_releases_database_as_it_was_found(store, tmp_path, capsys):
    """`backup` upgraded the live database before copying it: a backup taken before an update
    no longer opened in the release that wrote it, and there was no way back."""
    old = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.executescript(_SCHEMA_V1)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    os.environ["LEUKEMIA_CASE_DB"] = str(old)  # the store fixture's monkeypatch undoes it
    before = old.read_bytes()
    assert main(["backup", str(tmp_path / "before-update.sqlite3")]) == 0, capsys.readouterr()
    assert old.read_bytes() == before
    with closing(sqlite3.connect(tmp_path / "before-update.sqlite3")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (version,)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root: the case is a restore run with sudo")  # fmt: skip
def test_a_restore_run_as_root_keeps_the_owner_of_the_database_it_replaces(store, tmp_path):
    """The restored file was root's, mode 600: the app's account could not open it."""
    new_case(store, [["normal"]], sample_id="S-1")
    backup = store.backup(tmp_path / "b.sqlite3")
    os.chown(store.path, 1234, 1234)
    restore_database(backup, store.path)
    assert (store.path.stat().st_uid, store.path.stat().st_gid) == (1234, 1234)
    assert store.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root: the case is a restore run with sudo")  # fmt: skip
def test_a_restore_as_root_onto_a_fresh_server_gives_the_file_its_folders_owner(store, tmp_path):
    """The disaster-recovery case: no database yet, `sudo ... restore`, and a root-only file the
    app's account could not open."""
    new_case(store, [["normal"]], sample_id="S-1")
    backup = store.backup(tmp_path / "b.sqlite3")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    os.chown(fresh, 1234, 1234)
    restore_database(backup, fresh / "cases.sqlite3")
    assert (fresh / "cases.sqlite3").stat().st_uid == 1234


def test_a_restore_says_which_accounts_it_changed(store, tmp_path, capsys):
    """A password reset after a leak, and a disabling, came undone without a word."""
    accounts = Accounts(store.path)
    accounts.add_user("root", "a long password", ["admin"])
    accounts.add_user("leaver", "the leaked password 1", ["signer"])
    assert main(["backup", str(tmp_path / "b.sqlite3")]) == 0
    accounts.set_password("leaver", "a fresh password 2")
    accounts.set_disabled("leaver", True)
    accounts.add_user("newbie", "a long password 3", ["reviewer"])
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "b.sqlite3")]) == 0
    said = capsys.readouterr().out
    assert "WARNING: the restore changed accounts" in said
    assert "'leaver' is enabled again" in said and "'leaver' has its password" in said
    assert "'newbie' no longer exists" in said and "'root'" not in said


def test_a_snapshot_whose_changes_sit_in_its_wal_is_refused_not_restored_short(
    store, tmp_path, monkeypatch
):
    """On read-only storage the file was read without its -wal: 1 of 4 cases came back, and
    the restore said nothing."""
    from leukemia_core import store_backup

    snap = tmp_path / "snap.sqlite3"
    store.backup(snap)
    Path(f"{snap}-wal").write_bytes(b"\0" * 4096)  # what a snapshot of a live database holds
    real = sqlite3.connect

    def read_only_storage(target, *args, **kwargs):  # mode=ro cannot make its -shm there
        if "mode=ro" in str(target):
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(store_backup.sqlite3, "connect", read_only_storage)
    with pytest.raises(CaseStoreError, match=r"snap.sqlite3-wal.*copy both files"):
        restore_database(snap, store.path)


def test_another_programs_database_with_a_schema_number_is_refused_unchanged(tmp_path):
    """A file with a user_version of its own was switched to WAL before it was refused, or
    called a newer case database ("update the app")."""
    for version in (5, 52):
        other = tmp_path / f"other{version}.sqlite3"
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE moz_places (id)")
            conn.execute(f"PRAGMA user_version = {version}")
            conn.commit()
        before = other.read_bytes()
        with pytest.raises(CaseStoreError, match="another program's SQLite database"):
            CaseStore(other)
        assert other.read_bytes() == before and not Path(f"{other}-wal").exists()


def test_the_users_command_says_when_the_database_may_be_read_by_others(tmp_path, monkeypatch,
                                                                        capsys):  # fmt: skip
    """An empty file made beforehand with `touch` (mode 644) became the case database, and
    the password hashes readable by every account on the server, without a word."""
    path = tmp_path / "pre.sqlite3"
    path.touch()
    path.chmod(0o644)
    monkeypatch.setenv("LEUKEMIA_CASE_DB", str(path))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("quiet river stones 7\n"))
    assert main(["users", "add", "ana", "--role", "signer", "--password-stdin"]) == 0
    assert f"chmod 600 {path}" in capsys.readouterr().err
    path.chmod(0o600)
    assert main(["users", "list"]) == 0 and "chmod" not in capsys.readouterr().err
