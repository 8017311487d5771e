"""transformers pipelines on a saved M2DINO: each serves the folder's default task (or one named when loading), with
the task's class names as labels.

`trust_remote_code=False`: the package is installed, and without it the pipeline's optional video-processor lookup
asks on stdin whether to run the folder's copied code (a transformers quirk for custom image processors).
"""

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from transformers import pipeline

import modeling_m2dino as m2dino

TASKS = ["breast_2cls", "lung_2cls", "cervix_multi", "thyroid_nodule_det"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids OpenMP oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_model(path, task_ids, default_task):
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in task_ids]
    config = tiny_config(tasks=tasks, default_task=default_task)
    torch.manual_seed(0)
    m2dino.M2DinoForMultiTask(config).save_pretrained(path)
    m2dino.M2DinoImageProcessor.from_config(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("pipelines") / "m2dino", TASKS, "breast_2cls")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 56), dtype=np.uint8))  # any size: the processor resizes


def labels_of(task_id):
    return next(t for t in m2dino.FMC_UIA_TASKS if t.id == task_id).labels


def test_image_classification_names_the_default_tasks_classes(saved, image):
    classifier = pipeline("image-classification", model=saved, trust_remote_code=False)
    assert type(classifier.model) is m2dino.M2DinoForImageClassification
    assert type(classifier.image_processor) is m2dino.M2DinoImageProcessor
    predictions = classifier(image)
    assert sorted(p["label"] for p in predictions) == sorted(labels_of("breast_2cls"))
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_a_task_named_when_loading_is_served(saved, image):
    classifier = pipeline("image-classification", model=saved, trust_remote_code=False,
                          model_kwargs={"default_task": "lung_2cls"})
    assert classifier.model.default_task == "lung_2cls"
    assert {p["label"] for p in classifier(image)} == set(labels_of("lung_2cls"))
    with pytest.raises(ValueError, match="not a task of this model.*breast_2cls"):
        pipeline("image-classification", model=saved, trust_remote_code=False, model_kwargs={"default_task": "nope"})


def test_image_segmentation_returns_a_mask_per_class_by_name(saved, image):
    segmenter = pipeline("image-segmentation", model=saved, trust_remote_code=False)
    assert segmenter.model.default_task == "cervix_multi"  # the first segmentation task
    segments = segmenter(image, subtask="semantic")
    assert segments and {s["label"] for s in segments} <= set(labels_of("cervix_multi"))
    total = np.zeros((image.height, image.width), dtype=int)
    for segment in segments:
        assert segment["mask"].size == image.size
        total += np.asarray(segment["mask"]) > 0
    assert (total == 1).all()  # every pixel gets exactly one class


def test_object_detection_returns_named_boxes_in_image_pixels(saved, image):
    detector = pipeline("object-detection", model=saved, trust_remote_code=False)
    detections = detector(image, threshold=0.0)
    assert len(detections) == 1  # one query per image
    detection = detections[0]
    assert detection["label"] == "nodule"
    box = detection["box"]
    assert 0 <= box["xmin"] <= box["xmax"] <= image.width and 0 <= box["ymin"] <= box["ymax"] <= image.height


def test_a_task_type_the_model_lacks_is_a_clear_error(tmp_path):
    path = save_model(tmp_path / "no_detection", ["breast_2cls", "cervix_multi"], "breast_2cls")
    with pytest.raises(ValueError, match="needs at least one detection task"):
        pipeline("object-detection", model=path, trust_remote_code=False)
