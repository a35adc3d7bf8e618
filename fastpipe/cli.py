"""The ``fastpipe`` command: ``synth`` look-alike MSD data, ``bench`` the spleen experiment, ``profile`` a run.

``bench`` and ``profile`` forward everything after their name, untouched, to
``benchmarks.spleen.main`` and ``fastpipe.profiling.profile_run.main``; both are imported only
when used, so ``synth`` works in any install. The benchmarks are not part of the installed
library: ``bench`` runs them only where ``benchmarks`` is importable already (``python -m fastpipe
bench`` from the root of a source checkout); otherwise it says to run ``python -m benchmarks.spleen``
from a checkout. It never changes ``sys.path``.

Example:
    fastpipe synth --out data/spleen-small --preset spleen-small --seed 0
    fastpipe bench --help
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]

_FORWARDED = {
    "bench": (
        "benchmarks.spleen",
        "run the spleen experiment matrix from a source checkout (same as python -m benchmarks.spleen)",
    ),
    "profile": ("fastpipe.profiling.profile_run", "profile a training run (arguments go to profile_run)"),
}


def at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an int ``>= low``, else a usage error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def folder(text: str) -> Path:
    """An argparse ``type``: a folder path; an empty one (an unset ``$DIR``) is a usage error, not ``.``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path: name the folder to write into")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    from fastpipe import __version__
    from fastpipe.datasets._phantom import PRESETS

    parser = argparse.ArgumentParser(prog="fastpipe", description="fast 3D medical-imaging data pipelines")
    parser.add_argument("--version", action="version", version=f"fastpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{synth,bench,profile}")
    synth = sub.add_parser(
        "synth", help="write look-alike MSD Task09 spleen data (imagesTr/, labelsTr/, dataset.json)"
    )
    synth.add_argument("--out", required=True, type=folder, help="destination folder")
    synth.add_argument(
        "--preset", default="spleen-small", choices=sorted(PRESETS), help="default: spleen-small"
    )
    synth.add_argument("--seed", type=at_least(0), default=0, help="random seed, >= 0 (default: 0)")
    synth.add_argument(
        "--num", type=at_least(1), default=None, help="number of volumes (default: the preset's)"
    )
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for name, (_, text) in _FORWARDED.items():
        # add_help=False: `fastpipe bench --help` reaches the forwarded command's own parser.
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _run_synth(args: argparse.Namespace) -> int:
    from fastpipe.datasets.synth import synthesize

    start = time.perf_counter()
    try:
        root = synthesize(
            args.out, preset=args.preset, seed=args.seed, progress=not args.no_progress, num_volumes=args.num
        )
    except OSError as e:  # not a folder, no permission, disk full: the user's to fix, not a traceback
        print(f"fastpipe synth: cannot write {args.out}: {e}", file=sys.stderr)
        return 1
    import json

    listed = json.loads((root / "dataset.json").read_text())[
        "training"
    ]  # what this run wrote, not the folder
    files = [root / p for e in listed for p in (e["image"], e["label"])]
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    print(
        f"wrote {root / 'dataset.json'}: {len(listed)} volumes, {size_mb:.1f} MB in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _load_main(command: str) -> Callable[[list[str]], int | None] | None:
    """The forwarded command's ``main``, or None (after printing why) when its module is absent."""
    module_name = _FORWARDED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            raise  # the module exists but one of its own imports is missing: show the real error
        if command == "bench":
            hint = (
                "the benchmarks are not part of the installed library; from the repository root of a "
                "source checkout run `python -m benchmarks.spleen` (or `make bench`)"
            )
        else:
            hint = f"`fastpipe profile` needs {module_name}, which this install of fastpipe does not have"
        print(f"fastpipe {command}: cannot import {module_name!r}. {hint}.", file=sys.stderr)
        return None
    return module.main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastpipe`` command line; returns the exit status.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except SystemExit as e:  # argparse's --help and usage errors, here or in a forwarded command
        if isinstance(e.code, str):  # `raise SystemExit("message")`: Python would print it, so do we
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _dispatch(argv: list[str]) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in _FORWARDED:
        at = argv.index(args.command)
        if at:  # the top-level parser has no options of its own (but --help and --version)
            parser.error(f"unrecognized arguments before {args.command!r}: {' '.join(argv[:at])}")
        forwarded_main = _load_main(args.command)
        if forwarded_main is None:
            return 2
        return int(forwarded_main(argv[at + 1 :]) or 0)  # everything after the command, verbatim
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return _run_synth(args)


if __name__ == "__main__":  # `python -m fastpipe.cli ...` works as `python -m fastpipe ...`
    raise SystemExit(main())
