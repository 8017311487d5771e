"""The layout writer (training/data/synthetic/layout_writer.py): m2dino-synth writes the organisers' layout,
and the suite read back through the real challenge reader gives the generated labels."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2dino_training.data.fmc_uia import load_fmc_uia
from m2dino_training.data.synthetic import CSV_COLUMNS, SyntheticUltrasoundSuite, main, write_challenge_layout
from modeling_m2dino.task_types import TASK_TYPES
from modeling_m2dino.tasks import FMC_UIA_TASKS

SEG_FOLDERS = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}


def test_cli_writes_the_challenge_layout(tmp_path, capsys):
    out = tmp_path / "synth"
    suite = SyntheticUltrasoundSuite(scale=0.01, image_size=64, seed=1)
    assert main(["--out", str(out), "--scale", "0.01", "--image-size", "64", "--seed", "1"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert (out / "suite_grid.png").stat().st_size > 10_000
    for split in ("train", "val"):
        csv_dir = out / split / "csv_files"
        files = sorted(csv_dir.glob("*.csv"))
        assert len(files) >= 2
        rows = []
        for f in files:
            with open(f, newline="") as fh:
                reader = csv.DictReader(fh)
                assert reader.fieldnames == CSV_COLUMNS
                rows += list(reader)
        assert len(rows) == sum(suite.size(t, split) for t in suite.tasks)
        assert {r["task_id"] for r in rows} == {t.id for t in FMC_UIA_TASKS}
        index = {}
        for r in rows:
            index[r["task_id"]] = index.get(r["task_id"], -1) + 1  # rows are in index order per task
            spec = next(t for t in FMC_UIA_TASKS if t.id == r["task_id"])
            ex = suite.example(spec, split, index[spec.id])
            assert r["task_name"] == TASK_TYPES[spec.type].csv_name
            image_file = (csv_dir / r["image_path"]).resolve()
            assert image_file.is_relative_to(out / split)
            with Image.open(image_file) as im:
                grey = np.asarray(im.convert("L"))
            assert np.array_equal(grey, ex["image"])
            if spec.type == "segmentation":
                assert Path(r["image_path"]).parts[:3] == ("..", "Segmentation", SEG_FOLDERS[spec.num_classes])
                with Image.open(csv_dir / r["mask_path"]) as m:
                    assert m.mode == "L" and np.array_equal(np.asarray(m), ex["mask"])
            else:
                assert r["mask_path"] == ""
            if spec.type == "classification":
                assert int(r["mask"]) == ex["label"]
            if spec.type == "regression":
                assert int(r["num_classes"]) == spec.num_points
                pts = np.array([json.loads(r[f"point_{p + 1}_xy"]) for p in range(spec.num_points)], np.float32)
                assert np.array_equal(pts, ex["points"])  # exact round trip
            if spec.type == "detection":
                box = np.array([float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")], np.float32)
                assert np.array_equal(box, ex["boxes"][0])
        modes = {Image.open(csv_dir / r["image_path"]).mode for r in rows}
        assert modes == {"L", "RGB"}
    # a non-empty folder is refused unless --overwrite
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--scale", "0.01", "--image-size", "64"])
    with pytest.raises(FileExistsError):
        write_challenge_layout(out, ("val",), suite=suite, grid=False)
    write_challenge_layout(out, ("val",), suite=suite, overwrite=True, grid=False)
    assert sorted(p.name for p in out.iterdir()) == ["val"]
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "layout"
    assert main(["--out", str(out), "--scale", "0.01", "--image-size", "48", "--seed", "5"]) == 0
    return out, SyntheticUltrasoundSuite(scale=0.01, image_size=48, seed=5)


@pytest.mark.parametrize("split", ["train", "val"])
def test_layout_read_by_load_fmc_uia_gives_exactly_the_generated_labels(written, split):
    out, suite = written
    data = load_fmc_uia(out, split=split)
    assert len(data) == sum(suite.size(t, split) for t in suite.tasks)
    seen = set()
    for example in data:
        index = int(Path(example["image_path"]).stem)  # files are named by their index within the task
        expected = suite.example(example["task"], split, index)
        seen.add((example["task"], index))
        assert np.array_equal(np.asarray(example["image"].convert("L")), expected["image"])
        assert example["label"] == expected["label"]
        for key in ("mask", "boxes", "class_labels"):
            if expected[key] is None:
                assert example[key] is None, key
            else:
                assert np.array_equal(np.asarray(example[key]), expected[key]), key
        if expected["points"] is not None:
            assert np.array_equal(np.asarray(example["points"], np.float32), expected["points"])
    assert len(seen) == len(data)


def test_every_row_carries_num_classes_as_the_challenge_writes_it(written):
    out, _ = written
    specs = {t.id: t for t in FMC_UIA_TASKS}
    rows = [row for path in sorted((out / "train" / "csv_files").glob("*.csv")) + sorted((out / "val" / "csv_files").glob("*.csv"))
            for row in csv.DictReader(open(path, newline="", encoding="utf-8"))]
    assert rows
    for row in rows:
        spec = specs[row["task_id"]]
        expected = spec.num_points if spec.type == "regression" else spec.num_classes
        assert row["num_classes"] == str(expected), row


def test_the_command_runs_as_a_console_script_and_as_a_module():
    """`m2dino-synth` (through cli.py) and `python -m m2dino_training.data.synthetic` reach the same main()."""
    import importlib
    import subprocess
    import sys

    from m2dino_training.cli import COMMANDS
    from m2dino_training.data.synthetic import layout_writer

    assert importlib.import_module(COMMANDS["m2dino-synth"]).main is layout_writer.main
    run = subprocess.run([sys.executable, "-m", "m2dino_training.data.synthetic", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("usage: m2dino-synth") and "--out" in run.stdout, run.stderr
