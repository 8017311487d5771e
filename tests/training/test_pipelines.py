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


pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.fixture(scope="module")
def sixteen_bit():
    """A 16-bit image whose values mostly lie above 255 (what an 8-bit conversion would clip)."""
    return np.random.default_rng(1).integers(0, 65536, (40, 56)).astype(np.uint16)


def expected_logits(saved, array, task):
    processor = m2dino.M2DinoImageProcessor.from_pretrained(saved)
    model = m2dino.M2DinoForMultiTask.from_pretrained(saved).eval()
    with torch.no_grad():
        return model(processor(array)["pixel_values"], tasks=task).task_outputs[task]


def test_sixteen_bit_images_keep_their_values_in_the_segmentation_pipeline(saved, sixteen_bit, tmp_path):
    segmenter = pipeline("image-segmentation", model=saved, trust_remote_code=False,
                         pipeline_class=m2dino.M2DinoImageSegmentationPipeline)
    processor = m2dino.M2DinoImageProcessor.from_pretrained(saved)
    want = processor.post_process_semantic_segmentation(
        expected_logits(saved, sixteen_bit, "cervix_multi"), target_sizes=[sixteen_bit.shape])[0].numpy()
    Image.fromarray(sixteen_bit).save(tmp_path / "sixteen.png")
    for image in (sixteen_bit, torch.from_numpy(sixteen_bit.astype(np.int32)), Image.fromarray(sixteen_bit),
                  str(tmp_path / "sixteen.png")):
        segments = segmenter(image, subtask="semantic")
        names = labels_of("cervix_multi")
        got = np.zeros(sixteen_bit.shape, dtype=int)
        for segment in segments:
            got[np.asarray(segment["mask"]) > 0] = names.index(segment["label"])
        np.testing.assert_array_equal(got, want)


def test_sixteen_bit_images_keep_their_values_in_the_detection_and_classification_pipelines(saved, sixteen_bit):
    detector = pipeline("object-detection", model=saved, trust_remote_code=False,
                        pipeline_class=m2dino.M2DinoObjectDetectionPipeline)
    processor = m2dino.M2DinoImageProcessor.from_pretrained(saved)
    want = processor.post_process_object_detection(
        expected_logits(saved, sixteen_bit, "thyroid_nodule_det"), threshold=0.0, target_sizes=[sixteen_bit.shape])[0]
    for image in (sixteen_bit, Image.fromarray(sixteen_bit)):
        box = detector(image, threshold=0.0)[0]["box"]
        assert [box["xmin"], box["ymin"], box["xmax"], box["ymax"]] == [int(v) for v in want["boxes"][0].tolist()]
    classifier = pipeline("image-classification", model=saved, trust_remote_code=False,
                          pipeline_class=m2dino.M2DinoImageClassificationPipeline)
    probabilities = expected_logits(saved, sixteen_bit, "breast_2cls").logits.softmax(-1)[0]
    for image in (sixteen_bit, Image.fromarray(sixteen_bit)):
        scores = {p["label"]: p["score"] for p in classifier(image)}
        assert [scores[name] for name in labels_of("breast_2cls")] == pytest.approx(probabilities.tolist(), abs=1e-5)
