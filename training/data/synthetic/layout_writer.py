"""The synthetic suite on disk, in the organisers' layout (docs/data_layout.md), and its preview grid.

`write_challenge_layout` writes images, masks and one CSV per task type for each split, so the suite can be
read back by `load_fmc_uia` like the challenge's own data; `save_grid` draws one labelled example of every task.
`main` is the `m2dino-synth` command (also `python -m m2dino_training.data.synthetic`).
"""

import argparse
import csv
import os
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np

from modeling_m2dino.task_types import TASK_TYPES
from modeling_m2dino.tasks import FMC_UIA_TASKS

from ...task_types import training_task_type
from .suite import SPLITS, SyntheticUltrasoundSuite, check_split

_MAX_POINTS = max(t.num_points or 0 for t in FMC_UIA_TASKS)
CSV_COLUMNS = (["image_path", "mask_path", "task_id", "task_name", "mask", "num_classes"]
               + [f"point_{p + 1}_xy" for p in range(_MAX_POINTS)] + ["x_min", "y_min", "x_max", "y_max"])


def _save_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)


def _save_file(root, rel_path, array) -> str:
    """Saves a label file (a mask) of the layout under `root`; returns its CSV path."""
    (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
    _save_png(root / rel_path, array)
    return f"../{Path(rel_path).as_posix()}"


def _write_split(suite, root, split):
    """Images, masks and one CSV per task type for one split; returns the number of examples written."""
    rows = {}
    for spec in suite.tasks:
        kind = training_task_type(spec)
        folder = Path(kind.layout_folder(spec))
        (root / folder / "images").mkdir(parents=True)
        for i in range(suite.size(spec, split)):
            ex = suite.example(spec, split, i)
            image = ex["image"]
            if i % 8 == 5:  # a few RGB files, as the challenge has both
                image = np.repeat(image[:, :, None], 3, axis=2)
            rel = folder / "images" / f"{i:06d}.png"
            _save_png(root / rel, image)
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(image_path=f"../{rel.as_posix()}", task_id=spec.id, task_name=TASK_TYPES[spec.type].csv_name,
                       num_classes=str(kind.csv_count(spec)))
            row.update(kind.layout_cells(spec, ex, folder, i, lambda rel_path, array: _save_file(root, rel_path, array)))
            rows.setdefault(spec.type, []).append(row)
    (root / "csv_files").mkdir(parents=True)
    for kind, kind_rows in rows.items():
        with open(root / "csv_files" / f"synthetic_{kind}.csv", "w", newline="", encoding="utf-8") as fh:
            extra = [c for spec in suite.tasks for c in training_task_type(spec).csv_columns(spec) if c not in CSV_COLUMNS]
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS + list(dict.fromkeys(extra)))
            writer.writeheader()
            writer.writerows(kind_rows)
    return sum(len(r) for r in rows.values())


def write_challenge_layout(out_dir, splits=("train", "val"), suite=None, overwrite=False, grid=True,
                           **suite_kwargs) -> Path:
    """Write a suite (`suite`, or one built from `suite_kwargs`) in the challenge layout, one folder per split:
    `<out>/<split>/csv_files/synthetic_<type>.csv` (one CSV per task type, with CSV_COLUMNS and the columns
    the suite's other task types add, such as a measurement's `value_<label>`), and each task's files in its
    type's folder: `Classification/<task>/images`, `Segmentation/{Two..Five}/<task>/{images,masks}`,
    `Detection/<task>/images`, `Regression/<task>/images`; plus `<out>/suite_grid.png` (`save_grid`) unless
    `grid` is False. Returns the absolute path of `out_dir`.

    Writes into a temporary sibling folder and renames it into place at the end, so a crash leaves no
    half-written layout. A non-empty `out_dir` is a FileExistsError unless `overwrite`; an unknown split is a
    ValueError.
    """
    suite = suite or SyntheticUltrasoundSuite(**suite_kwargs)
    out = Path(out_dir).resolve()
    for split in splits:
        check_split(split)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for split in splits:
            _write_split(suite, tmp / split, split)
        if grid:
            save_grid(suite, tmp / "suite_grid.png", split=splits[0])
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_grid(suite, path, split="train", cols=7):
    """A PNG grid at `path` with one example of `split` for every task of the suite and its label drawn on it
    (mask, box, points, class), `cols` tasks a row; returns `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = -(-len(suite.tasks) // cols)
    fig = Figure(figsize=(2.3 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    colours = ListedColormap(["#00000000", "#ff3b30", "#34c759", "#0a84ff", "#ffcc00"])
    for k, (ax, spec) in enumerate(zip(axes, suite.tasks)):
        ex = suite.example(spec, split, (3 * k + 1) % suite.size(spec, split))
        ax.imshow(ex["image"], cmap="gray", vmin=0, vmax=255)
        caption = spec.type
        if ex["mask"] is not None:
            ax.imshow(np.ma.masked_equal(ex["mask"], 0), cmap=colours, vmin=0, vmax=4, alpha=0.45, interpolation="nearest")
            caption = "mask: " + ", ".join(spec.labels[1:])
        if ex["label"] is not None:
            caption = f"class: {spec.labels[ex['label']]}"
        if ex["boxes"] is not None:
            x0, y0, x1, y1 = ex["boxes"][0]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="#ffcc00", lw=1.5))
            caption = f"box: {spec.labels[0]}"
        if ex["points"] is not None:
            pts = ex["points"] - 0.5  # imshow puts pixel centres at integers
            ax.scatter(pts[:, 0], pts[:, 1], s=22, c="#ff3b30", edgecolors="white", linewidths=0.6)
            for p, (x, y) in enumerate(pts):
                ax.annotate(str(p + 1), (x, y), xytext=(3, 3), textcoords="offset points", color="#ffcc00", fontsize=7)
            caption = "points: " + ", ".join(spec.labels)
        ax.set_title(spec.id + "\n" + textwrap.fill(caption, 44), fontsize=6.5)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def main(argv=None) -> int:
    """m2dino-synth: write the synthetic suite in the challenge layout, with a preview grid."""
    parser = argparse.ArgumentParser(prog="m2dino-synth", description=main.__doc__)
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent, unless --overwrite)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the per-task sizes (default 1.0)")
    parser.add_argument("--image-size", type=int, default=224, help="pixels, a multiple of 16 (default 224)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=SPLITS)
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all 27)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    try:
        suite = SyntheticUltrasoundSuite(args.scale, args.image_size, args.seed, args.tasks)
    except ValueError as err:
        parser.error(str(err))
    total = sum(suite.size(t, s) for t in suite.tasks for s in args.splits)
    start = time.perf_counter()
    try:
        out = write_challenge_layout(args.out, args.splits, suite=suite, overwrite=args.overwrite)
    except FileExistsError as err:
        parser.error(str(err))
    seconds = time.perf_counter() - start
    print(f"wrote {total} examples of {len(suite.tasks)} tasks ({', '.join(args.splits)}) to {out} "
          f"in {seconds:.1f} s ({total / seconds:.0f} images/s incl. PNG writing); preview: {out / 'suite_grid.png'}")
    return 0
