"""``python -m pipeline COMMAND ...``: the ``rewoo`` command (:mod:`pipeline.cli`) without installing it.

    python -m pipeline --help
    python -m pipeline run "Compute 12 + 30." --json
"""

import sys

from pipeline.cli import main

sys.exit(main())
