"""`python -m m2dino_training.data.synthetic`: the `m2dino-synth` command."""

import sys

from .layout_writer import main

if __name__ == "__main__":
    sys.exit(main())
