"""Batch commands of the ALL screening app (research use only).

  python -m leukemia_core analyze IMAGES_OR_FOLDERS... --out DIR   segment, classify and count
  python -m leukemia_core segment IMAGES... --out DIR    white cells only: crops, CSV, overlays
  python -m leukemia_core users ...                      accounts (see the README)
  python -m leukemia_core backup FILE / restore FILE     the case database

analyze writes cells.csv, one JSON per image and summary.json, and prints the result on
standard output; progress and notes go to standard error. A bad file is reported and skipped.
Exit codes: 0 all analysed, 3 results written but some images skipped, 1 nothing could be
analysed, 2 a refused command (the message says why), 130 interrupted (Ctrl-C; run it again to
go on).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sqlite3
import sys
from pathlib import Path

from leukemia_core import users_cli
from leukemia_core.cli_parser import WholeNameParser
from leukemia_core.counting import interval_text
from leukemia_core.cropping import (
    CROP_SIZE_RANGE,
    DEFAULT_CROP_SIZE,
    check_crop_size,
)
from leukemia_core.errors import LeukemiaCoreError, SettingError
from leukemia_core.input_folders import images_in
from leukemia_core.outputs import (
    prepare_output_folder,
)
from leukemia_core.runtime import RUNTIMES
from leukemia_core.segment_cli import segment_files
from leukemia_core.types import BlastCount


def _crop_size(text: str) -> int:
    """``--crop-size``: a whole number within :data:`CROP_SIZE_RANGE` (argparse says why not)."""
    try:
        value: object = int(text)
    except ValueError:
        value = text
    try:
        return check_crop_size(value)
    except SettingError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _folder(text: str) -> Path:
    """``--out``: a folder name; empty is refused (Path('') would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty; name the output folder, e.g. --out results (or --out . for this one)"
        )
    return Path(text)


PARTLY_FAILED = 3  # results written, but some images could not be analysed (summary.json)
INTERRUPTED = 130  # Ctrl-C, as a shell reports it: the finished images are kept


def _error(error: Exception | str) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = WholeNameParser(
        prog="python -m leukemia_core",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser("segment", help="find white cells and write crops, CSV, overlays")
    segment.add_argument("images", nargs="+", type=Path,
                         help="smear field images, or folders of them")  # fmt: skip
    segment.add_argument("--out", type=_folder, required=True, help="output folder")
    segment.add_argument(
        "--crop-size",
        type=_crop_size,
        default=DEFAULT_CROP_SIZE,
        help=f"side of the classifier crops in px, {CROP_SIZE_RANGE[0]} to {CROP_SIZE_RANGE[1]} "
        f"(default {DEFAULT_CROP_SIZE})",
    )
    analyze = commands.add_parser("analyze", help="segment, classify and count blasts")
    analyze.add_argument("images", nargs="+", type=Path,
                         help="smear fields or single-cell images, or folders of them")  # fmt: skip
    analyze.add_argument("--out", type=_folder, required=True, help="output folder")
    analyze.add_argument("--model", help="model folder name (default: the active model)")
    analyze.add_argument(
        "--single-cells", action="store_true", help="each image shows one cell (a crop)"
    )
    analyze.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: this process (default); ray: tasks and classifier actors "
                         "on Ray (pip install -r requirements-ray.txt)")  # fmt: skip
    analyze.add_argument("--runtime", choices=RUNTIMES, default="auto",
                         help="what runs the network: auto (default) ONNX Runtime on a CPU when "
                         "it matches Keras on a probe batch, else Keras; keras; onnx")  # fmt: skip
    analyze.add_argument("--address", help="Ray cluster address (default: a local instance)")
    analyze.add_argument("--num-workers", type=_positive, default=1,
                         help="Ray classifier actors, each with the model loaded (default 1)")  # fmt: skip
    analyze.add_argument("--gpus-per-worker", type=_gpus, default=0.0,
                         help="GPUs each Ray classifier actor reserves (default 0)")  # fmt: skip
    users_cli.add_parser(commands)
    backup = commands.add_parser("backup", help="copy the case database safely, app running")
    backup.add_argument(
        "target", type=Path, help="the new backup file, e.g. cases-2026-12-06.sqlite3"
    )
    restore = commands.add_parser(
        "restore", help="put a backup in place of the case database (stop the app first)"
    )
    restore.add_argument("backup", type=Path, help="a file written by the backup command")
    args = parser.parse_args(argv)
    if args.command in ("analyze", "segment"):
        with _sigterm_as_ctrl_c():
            return _run_images(parser, args)
    if args.command == "users":
        return users_cli.run(args)
    if args.command == "backup":
        return _backup(args.target)
    return _restore(args.backup)


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """A ``kill`` (or a batch scheduler's time limit) stops a run as Ctrl-C does: the finished
    images kept and said so (it ended silently, or with a native stack dump on Ray)."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (called from a library): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_images(parser, args) -> int:
    """``analyze`` or ``segment``."""
    if args.command == "analyze":
        ray_only = args.address or args.num_workers != 1 or args.gpus_per_worker
        if args.engine == "local" and ray_only:
            parser.error("--address, --num-workers and --gpus-per-worker need --engine ray")
        try:
            return _analyze(args)
        except KeyboardInterrupt:  # a traceback of 40 lines said nothing of what was kept
            print(f"\ninterrupted: the images finished so far are kept in {args.out}; run the "
                  "same command again to go on from there.", file=sys.stderr)  # fmt: skip
            return INTERRUPTED
    try:
        args.images = images_in(args.images)  # folders, as analyze takes them
        prepare_output_folder(args.out)
    except LeukemiaCoreError as error:
        return _error(error)
    try:
        failures = segment_files(args.images, args.out, args.crop_size)
    except LeukemiaCoreError as error:  # --out holds a table it did not write
        return _error(error)
    except OSError as error:
        return _write_error(error, args.out, "")
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to segment every image.",
              file=sys.stderr)  # fmt: skip
        return INTERRUPTED
    print(
        f"wrote {args.out / 'cells.csv'}; {len(args.images) - failures} images segmented, "
        f"{failures} skipped (research use only)",
        file=sys.stderr,
    )
    return 1 if failures == len(args.images) else PARTLY_FAILED if failures else 0  # as analyze


def _interval(count: dict) -> str:
    """`` (95% interval 4.1–9.8%)`` of a count's JSON, empty when there is none."""
    text = interval_text(BlastCount(**count))
    return "" if text == "—" else f" (95% interval {text})"


def _write_error(error: OSError, out: Path, kept: str) -> int:
    """A run stopped by its output folder (full, read-only): what to do, exit 2."""
    fix = ("Make the folder writable" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
           else "Free some space")  # fmt: skip
    where = Path(os.fsdecode(error.filename)).resolve() if error.filename else None
    if where is not None and not where.is_relative_to(out.resolve()):  # not --out's doing
        return _error(f"{error.strerror or error} at {where}. {fix} there, then run the same "
                      f"command again {kept}".rstrip() + ".")  # fmt: skip
    return _error(
        f"could not write the results to {out}: {error}. {fix} or choose another "
        f"--out folder, then run the same command again {kept}".rstrip()
        + "."
    )


def _backup(target: Path) -> int:
    """``backup``: the case database (``$LEUKEMIA_CASE_DB``) copied whole to ``target``."""
    from leukemia_core.store import CaseStore
    from leukemia_core.store_backup import backup_contents

    try:
        # create=False: a mistyped path must not back up a new, empty file. upgrade=False: a
        # backup taken before an update must still open in the release that wrote it.
        store = CaseStore(create=False, upgrade=False)
        written = store.backup(target)
        held = backup_contents(written)  # read only: the backup stays as written
    except LeukemiaCoreError as error:
        return _error(error)
    print(f"backed up {store.path} to {written} ({written.stat().st_size:,} bytes; checked): "
          f"{_contents_words(held)}")  # fmt: skip
    return 0


def _restore(backup: Path) -> int:
    """``restore``: ``backup`` in place of the case database; the replaced one set aside."""
    from leukemia_core.store import default_database_path
    from leukemia_core.store_backup import restore_database

    try:
        restored = restore_database(backup, default_database_path())
    except LeukemiaCoreError as error:
        return _error(error)
    print(f"restored {backup} to {restored.database}: {_contents_words(restored.contents)}")
    if not restored.contents["accounts"]:
        print("note: the restored database has no accounts, so nobody can log in: run "
              "python -m leukemia_core users init")  # fmt: skip
    if restored.account_changes:  # a reset or disabling after a leak must not come undone
        print("WARNING: the restore changed accounts: " + "; ".join(restored.account_changes)
              + ". Disable, reset or change them again if that was not meant (python -m "
              "leukemia_core users disable/password/roles NAME).")  # fmt: skip
    if restored.set_aside:
        from leukemia_core.store_backup import backup_contents

        try:  # what the restore took out of use, so that nobody deletes it unread
            replaced = f"held {_contents_words(backup_contents(restored.set_aside[0]))}; "
        except (LeukemiaCoreError, sqlite3.Error):
            replaced = ""
        print(f"the database it replaced {replaced}it is kept as {restored.set_aside[0]} (with "
              "its -wal and -shm files, if any): cases, signatures and accounts written after "
              "the backup are only there, so keep it")  # fmt: skip
    return 0


def _contents_words(held: dict[str, int]) -> str:
    return (
        f"{_count(held['samples'], 'sample')} in {_count(held['case_versions'], 'case version')} "
        f"({held['signed']} signed), {_count(held['accounts'], 'account')}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _gpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be a number of GPUs from 0 to 64, got {text!r}")
    return value


def _analyze(args) -> int:
    from leukemia_core.batch import analyze_files  # imports TensorFlow
    from leukemia_core.models.folder import models_dir, read_config

    try:
        args.images = images_in(args.images)
        read_config(args.model)  # a missing model is a clear message before any folder is made
        prepare_output_folder(args.out)
        if args.engine == "ray":
            from leukemia_core.batch_ray import analyze_files_ray

            # Ray's own messages ("(raylet) A worker died ...") go with the progress on
            # standard error: standard output holds the result alone (result.txt).
            with contextlib.redirect_stdout(sys.stderr):
                failures, summary = analyze_files_ray(
                    args.images, args.out, args.model, models_dir().resolve(),
                    single_cells=args.single_cells, address=args.address,
                    num_workers=args.num_workers, gpus_per_worker=args.gpus_per_worker,
                    runtime=args.runtime,
                )  # fmt: skip
        else:
            from leukemia_core.classify import Classifier
            from leukemia_core.models.folder import load_model

            classifier = Classifier(load_model(args.model), runtime=args.runtime)
            failures, summary = analyze_files(
                args.images, args.out, classifier, single_cells=args.single_cells
            )
    except LeukemiaCoreError as error:
        return _error(error)
    except OSError as error:  # e.g. the disk filled up while writing: what was written is whole
        return _write_error(error, args.out, "(finished images are kept and skipped)")
    count, model_name = summary["count"], summary["model"]
    skipped = len(summary["images_failed"])
    skipped_text = f" {skipped} image(s) skipped: see above and summary.json." if skipped else ""
    if repeats := summary["images_repeated"]:
        files = len({r["same_as"] for r in repeats})
        skipped_text += (f" {files} file(s) given more than once were analysed once "
                         f"({len(repeats)} repeat(s) left out).")  # fmt: skip
    if summary["images_analysed"] == 0:
        print(f"No image could be analysed.{skipped_text} Research use only.", file=sys.stderr)
        return 1
    hint = f" {count['hint']}" if count.get("hint") else ""
    print(  # the result: on standard output, so that `analyze ... > result.txt` keeps it
        f"{_count(summary['images_analysed'], 'image')} analysed with {model_name}: "
        f"{_count(count['n_blasts'], 'blast')} of {_count(count['n_counted'], 'cell')} counted"
        f"{_interval(count)}. {count['interpretation']}{hint} Wrote {args.out}.{skipped_text} "
        "Research use only."
    )
    if by_folder := summary["count_by_folder"]:
        print(f"WARNING: these images come from {len(by_folder)} folders and are counted above "
              "as one sample. If the folders hold different samples, run one command per "
              "sample. Each folder alone: " + "; ".join(
                  f"{folder}: {c['n_blasts']} of {c['n_counted']}{_interval(c)}"
                  for folder, c in by_folder.items()) + ".")  # fmt: skip
    if warned := summary["quality_warned_images"]:
        print(f"Fields that failed a quality check (their cells were sent to review): "
              f"{', '.join(warned)}.")  # fmt: skip
    domain = summary["domain"]
    if domain is None and summary["cells_found"] == 0:
        print("No cells were found, so no out-of-domain check was made.")
    elif domain is None:
        print(f"{model_name} has no domain reference: no out-of-domain check was made.")
    else:
        warned = ", ".join(summary["warned_images"])
        if domain["warned"]:  # the set as a whole: every image's cells, not only those named
            images = f" The images least like it: {warned}." if warned else ""
            print(f"WARNING: {domain['message']} Every cell of every image was sent to "
                  f"review.{images}")  # fmt: skip
        elif warned:  # the set resembles the training data, some of its images do not
            print(f"WARNING: images unlike the training data (every cell of them sent to "
                  f"review): {warned}. {domain['message']}")  # fmt: skip
        else:
            print(domain["message"])
    return PARTLY_FAILED if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
