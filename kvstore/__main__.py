"""`python -m kvstore`: the `kvstore` command, for an environment without its script on PATH."""

import sys

from kvstore.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
