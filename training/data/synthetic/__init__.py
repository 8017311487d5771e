"""The embedded synthetic ultrasound suite: the 27 FMC_UIA tasks drawn as B-mode-like images with exact labels.

No labelled ultrasound ships with any package, so tests, examples and benchmarks run on this suite. Every
image is an echogenicity map of the task's anatomy (drawn by its entry of `scenes.TASK_SCENES`), turned into
speckle the way a scanner does it (`renderer.render`): random scatterers weighted by the echogenicity,
convolved with the pulse's point-spread function, envelope-detected as the magnitude of the complex (I/Q)
signal, attenuated with depth and log-compressed, inside a convex, phased or linear field of view. See
docs/synthetic.md.

    suite = SyntheticUltrasoundSuite(scale=0.1, image_size=64, seed=0)
    example = suite.example("fetal_head", "train", 3)   # regenerates that one example alone
    dataset = suite.dataset("train")                      # all tasks, interleaved, generated on the fly

The modules, by job: `renderer` (canvas, fields of view, speckle, the clinical groups' looks), `scenes` (the
anatomy of every task), `suite` (sizes, classes, examples, datasets) and `layout_writer` (the suite on disk in
the organisers' layout, the preview grid and the `m2dino-synth` command).
"""

from .layout_writer import CSV_COLUMNS, main, save_grid, write_challenge_layout
from .suite import (
    CLASS_WEIGHTS,
    EXAMPLE_LABEL_FIELDS,
    MIN_EXAMPLES,
    SPLITS,
    TRAIN_SIZES,
    TRANSFER_PAIRS,
    VAL_FRACTION,
    SyntheticDataset,
    SyntheticUltrasoundSuite,
)

__all__ = [
    "SyntheticUltrasoundSuite",
    "SyntheticDataset",
    "SPLITS",
    "TRAIN_SIZES",
    "VAL_FRACTION",
    "MIN_EXAMPLES",
    "CLASS_WEIGHTS",
    "TRANSFER_PAIRS",
    "EXAMPLE_LABEL_FIELDS",
    "CSV_COLUMNS",
    "write_challenge_layout",
    "save_grid",
    "main",
]
