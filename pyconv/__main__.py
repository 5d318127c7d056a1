"""`python -m pyconv` runs the command line (see pyconv.cli)."""
import sys

from pyconv.cli import main

if __name__ == "__main__":
    sys.exit(main())
