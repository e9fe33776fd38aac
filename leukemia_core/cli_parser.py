"""The command lines' argument parser: whole option names only."""

from __future__ import annotations

import argparse


class WholeNameParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options, and its subcommands' (they are made of the same
    class), must be written whole: with abbreviations allowed, a mistyped ``--mode cells`` was
    read as ``--model cells`` and answered "no model named 'cells'"."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
