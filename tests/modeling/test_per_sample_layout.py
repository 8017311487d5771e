"""The fixed per-sample layout of predictions (`per_sample.prediction_layout`) comes from the task specs alone, and
each task type's `output_shapes` agrees with what its head returns."""

import pytest
import torch
from conftest import tiny_config

import modeling_m2dino as m2dino
from modeling_m2dino.per_sample import prediction_layout

IMPLS = m2dino.TASK_TYPE_IMPLEMENTATIONS


@pytest.mark.parametrize("image_size", [(32, 32), (64, 48)])
def test_output_shapes_of_every_type_match_its_head(image_size):
    torch.manual_seed(0)
    config = tiny_config(detection_num_queries=3)
    model = m2dino.M2DinoForMultiTask(config).eval()
    with torch.no_grad():
        outputs = model.m2dino(torch.randn(2, 3, *image_size))
        for task in config.task_specs:
            fields, _ = model.run_head(task, outputs)
            stated = IMPLS[task.type].output_shapes(config, task, image_size)
            assert stated == {name: tuple(value.shape[1:]) for name, value in fields.items()}, task.id


def test_layout_pads_each_field_to_the_largest_task_of_its_type():
    tasks = [m2dino.TaskSpec("two", "segmentation", num_classes=2).to_dict(),
             m2dino.TaskSpec("five", "segmentation", num_classes=5).to_dict(),
             m2dino.TaskSpec("pts", "regression", num_points=3).to_dict()]
    config = tiny_config(tasks=tasks, default_task="two")
    layout = prediction_layout(config.task_specs, config, (32, 32))
    assert layout == {"segmentation_logits": (5, 8, 8), "regression_keypoints": (3, 2), "regression_heatmaps": (3, 4, 4)}
