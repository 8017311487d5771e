"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) for every M2DINO class.

The mixins come from the source distribution of the installed transformers release (see `common_tests.py`).
Every test the mixin defines runs; the few that cannot apply to a task-conditioned model are overridden below,
each with its reason, and listed in docs/conformance.md.
"""

import unittest
from contextlib import contextmanager

import torch
from torch import nn
from common_tests import load_transformers_test_module
from conftest import FOUR_TASKS

import modeling_m2dino as m2dino

ModelTesterMixin = load_transformers_test_module("test_modeling_common").ModelTesterMixin
floats_tensor = load_transformers_test_module("test_modeling_common").floats_tensor
ConfigTester = load_transformers_test_module("test_configuration_common").ConfigTester


class M2DinoModelTester:
    """Builds the tiny config and inputs the mixin runs every class on: two layers (the smallest the mixin
    allows, and the case where the default `feature_layers` repeat a layer), one task of each type."""

    def __init__(self, parent, batch_size=2, image_size=32, patch_size=16, num_channels=3, hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_register_tokens=2,
                 num_experts=4, num_experts_per_tok=2, decoder_hidden_size=16):
        self.parent = parent
        self.is_training = True
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_register_tokens = num_register_tokens
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.decoder_hidden_size = decoder_hidden_size
        # class token + registers + patches: the length of hidden states and attentions
        self.seq_length = 1 + num_register_tokens + (image_size // patch_size) ** 2

    def get_config(self):
        tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in FOUR_TASKS]
        return m2dino.M2DinoConfig(
            image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            num_register_tokens=self.num_register_tokens, num_experts=self.num_experts,
            num_experts_per_tok=self.num_experts_per_tok, decoder_hidden_size=self.decoder_hidden_size,
            tasks=tasks, default_task="cervix_multi",
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


# Labels in each single-type class's documented format, for the mixin's training and loss tests.
def _labels_for(model_class, batch_size, image_size):
    if model_class is m2dino.M2DinoForSemanticSegmentation:
        return torch.zeros(batch_size, image_size, image_size, dtype=torch.long)
    if model_class is m2dino.M2DinoForImageClassification:
        return torch.zeros(batch_size, dtype=torch.long)
    if model_class is m2dino.M2DinoForObjectDetection:
        return [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.2]])}
                for _ in range(batch_size)]
    if model_class is m2dino.M2DinoForKeypointDetection:
        return torch.full((batch_size, 3, 2), 0.5)
    if model_class is m2dino.M2DinoForMultiTask:
        return [{"mask": torch.zeros(image_size, image_size, dtype=torch.long)} for _ in range(batch_size)]
    return None


class M2DinoModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (
        m2dino.M2DinoModel,
        m2dino.M2DinoForSemanticSegmentation,
        m2dino.M2DinoForImageClassification,
        m2dino.M2DinoForObjectDetection,
        m2dino.M2DinoForKeypointDetection,
        m2dino.M2DinoForMultiTask,
    )
    # A vision model: it has no token embeddings to resize.
    test_resize_embeddings = False
    # Task-conditioned MoE: experts no task chose, heads of tasks not in the batch and the unused mask token get
    # no gradient (the flag transformers provides for MoE models).
    test_all_params_have_gradient = False
    # The mixin runs this check only for models whose config file carries a copyright year of 2023 or later;
    # it is what guarantees that weights missing from a checkpoint get initialised, so run it.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = M2DinoModelTester(self)
        self.config_tester = ConfigTester(self, config_class=m2dino.M2DinoConfig, has_text_modality=False,
                                          hidden_size=37)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        labels = _labels_for(model_class, self.model_tester.batch_size, self.model_tester.image_size)
        if return_labels and labels is not None:
            inputs_dict["labels"] = labels
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    @contextmanager
    def only_classes(self, *excluded):
        """Runs a mixin test on every class but `excluded`."""
        self.all_model_classes = tuple(c for c in type(self).all_model_classes if c not in excluded)
        try:
            yield
        finally:
            del self.all_model_classes

    # Overrides: each says why the common test cannot apply as written (listed in docs/conformance.md).

    def test_model_get_set_embeddings(self):
        # Vision model: the input embedding is the patch convolution, not a token table (as in transformers' ViT tests).
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())

    def test_training(self):
        # M2DinoModel is a backbone without a loss; the mixin skips base models by mapping name, which registered classes lack.
        with self.only_classes(m2dino.M2DinoModel):
            super().test_training()

    def test_training_gradient_checkpointing(self):
        # M2DinoModel has no loss (see test_training).
        with self.only_classes(m2dino.M2DinoModel):
            super().test_training_gradient_checkpointing()

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        # M2DinoModel has no loss (see test_training).
        with self.only_classes(m2dino.M2DinoModel):
            super().test_training_gradient_checkpointing_use_reentrant_false()

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        # M2DinoModel has no loss (see test_training).
        with self.only_classes(m2dino.M2DinoModel):
            super().test_training_gradient_checkpointing_use_reentrant_true()

    def test_determinism(self):
        # M2DinoForMultiTask's first output is a dict of per-task outputs (the mixin compares one tensor): every
        # tensor inside it is compared instead.
        with self.only_classes(m2dino.M2DinoForMultiTask):
            super().test_determinism()
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = m2dino.M2DinoForMultiTask(config).eval()
        with torch.no_grad():
            first, second = model(**inputs_dict), model(**inputs_dict)
        self.assertEqual(first.task_outputs.keys(), second.task_outputs.keys())
        for task_id, output in first.task_outputs.items():
            for name, tensor in output.items():
                torch.testing.assert_close(tensor, second.task_outputs[task_id][name], rtol=0, atol=1e-5)
