"""The suite written by m2dino-synth, read back through the real challenge reader, gives the generated labels."""

from pathlib import Path

import numpy as np
import pytest

from m2dino_training.data.fmc_uia import load_fmc_uia
from m2dino_training.data.synthetic import SyntheticUltrasoundSuite, main


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
    import csv

    from modeling_m2dino.tasks import FMC_UIA_TASKS

    out, _ = written
    specs = {t.id: t for t in FMC_UIA_TASKS}
    rows = [row for path in sorted((out / "train" / "csv_files").glob("*.csv")) + sorted((out / "val" / "csv_files").glob("*.csv"))
            for row in csv.DictReader(open(path, newline="", encoding="utf-8"))]
    assert rows
    for row in rows:
        spec = specs[row["task_id"]]
        expected = spec.num_points if spec.type == "regression" else spec.num_classes
        assert row["num_classes"] == str(expected), row
