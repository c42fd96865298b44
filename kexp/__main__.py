"""``python -m kexp ...``: the same program as ``kexp ...``."""

from kexp.cli.app import main

if __name__ == "__main__":
    main()
