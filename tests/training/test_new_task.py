"""m2dino_training.new_task: a task added to a trained model gets a head fitted like one of m2dino-train's."""

import torch
from conftest import tiny_config

import modeling_m2dino as m2dino
from m2dino_training.new_task import add_task


def test_add_task_fits_a_new_head_to_the_examples_it_is_given():
    spec = m2dino.known_task("fetal_head_circumference")  # a measurement: its head keeps its values' mean and std
    torch.manual_seed(0)
    unfitted = m2dino.M2DinoForMultiTask(tiny_config())
    add_task(unfitted, spec)  # no examples: the head keeps its initial statistics
    assert (unfitted.heads[spec.id].value_mean.item(), unfitted.heads[spec.id].value_std.item()) == (0.0, 1.0)
    fitted = m2dino.M2DinoForMultiTask(tiny_config())
    add_task(fitted, spec, train_examples=[{"values": [150.0]}, {"values": [250.0]}])
    assert (fitted.heads[spec.id].value_mean.item(), fitted.heads[spec.id].value_std.item()) == (200.0, 50.0)
    assert fitted.config.task_ids[-1] == spec.id
