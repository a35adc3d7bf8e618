"""``python -m fastpipe``: the same command line as the ``fastpipe`` console script."""

from fastpipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
