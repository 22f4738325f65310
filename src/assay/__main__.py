"""``python -m assay``: the same command line as the ``assay`` script, for environments where
the script is not on PATH (a venv that is not activated, ``python -m`` in CI)."""

import sys

from assay.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
