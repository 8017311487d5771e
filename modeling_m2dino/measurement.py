"""Measurement task type: one or more scalar values per image (a head circumference in mm, a gestational age).

The head regresses standardised values from the class token, the mean patch token and the four quadrant means of
the patch grid, and keeps the training values' mean and standard deviation as buffers (saved with the weights), so
that its `values` come back in the values' own units. Loss: Huber (smooth L1) on the standardised values, so that
values of different units weigh alike.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.utils import ModelOutput

from .feature_fusion import PooledFeaturesHead
from .task_type_base import PADDING_VALUE, TaskType


@dataclass
class M2DinoMeasurementOutput(ModelOutput):
    """`values` (batch, values) in the values' units, in the order of the task's `labels`."""

    loss: torch.Tensor | None = None
    values: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    indices: torch.LongTensor | None = None  # batch positions of these samples (M2DinoForMultiTask)


class M2DinoMeasurementHead(PooledFeaturesHead):
    """Standardised values from the pooled features (`PooledFeaturesHead`), returned in units through the buffers
    `value_mean`, `value_std` (set from the training values with `set_value_statistics`; 0 and 1 until then)."""

    def __init__(self, config, task):
        super().__init__(config)
        count = len(task.labels)
        self.regressor = nn.Linear(self.pooled_features_size, count)
        self.register_buffer("value_mean", torch.zeros(count))
        self.register_buffer("value_std", torch.ones(count))

    def set_value_statistics(self, mean, std):
        """The training values' mean and standard deviation, per value (std floored so that it divides)."""
        mean = torch.as_tensor(np.asarray(mean, np.float32)).reshape(self.value_mean.shape)
        std = torch.as_tensor(np.asarray(std, np.float32)).reshape(self.value_std.shape).clamp(min=1e-6)
        self.value_mean.copy_(mean)
        self.value_std.copy_(std)

    def forward(self, feature_maps: tuple[torch.Tensor, ...], pooled_output: torch.Tensor):
        standardised = self.regressor(self.pool(feature_maps, pooled_output))
        std = self.value_std.to(standardised.dtype)
        # The values, then the scale the loss standardises their errors by (the loss alone reads it).
        return self.value_mean.to(standardised.dtype) + std * standardised, std.expand_as(standardised)


class MeasurementType(TaskType):
    """Everything that is specific to measurement tasks, in one place. A task names its values in `labels`."""

    name = "measurement"
    order = 4
    csv_name = "measurement"
    count_field = None  # one value per label
    head_class = M2DinoMeasurementHead
    output_class = M2DinoMeasurementOutput
    output_fields = ("values",)
    label_keys = ("values",)
    slot_dimensions = {"values": (1, lambda task: len(task.labels))}

    @staticmethod
    def init_head(head, config):
        init.zeros_(head.value_mean)
        init.ones_(head.value_std)

    @staticmethod
    def output_shapes(config, task, image_size):
        return {"values": (len(task.labels),)}

    @classmethod
    def stack_labels(cls, samples: list[dict], task, image_size) -> torch.Tensor:
        """Per-sample `{"values": (V,)}` -> FloatTensor (B, V)."""
        values = [torch.as_tensor(np.asarray(v, np.float32)).reshape(-1) for v in cls.label_entries(samples, "values", task)]
        try:
            return torch.stack(values) if values else torch.zeros(0, len(task.labels))
        except RuntimeError:
            raise ValueError(f"task {task.id!r} (measurement): every label needs {len(task.labels)} values, "
                             f"got {[len(v) for v in values]}") from None

    @staticmethod
    def check_labels(labels, task, batch_size: int, image_size) -> torch.Tensor:
        expected = (batch_size, len(task.labels))
        if not torch.is_tensor(labels) or labels.shape != expected:
            shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
            raise ValueError(f"task {task.id!r} (measurement): labels must be a FloatTensor of shape {expected}, got {shape}")
        if not torch.isfinite(labels).all():
            raise ValueError(f"task {task.id!r} (measurement): values must be finite")
        return labels.float()

    @staticmethod
    def loss(outputs, labels: torch.Tensor, task) -> torch.Tensor:
        values, scale = outputs
        return F.smooth_l1_loss((values.float() - labels) / scale.float(), torch.zeros_like(labels))

    @staticmethod
    def encode(processor, example: dict):
        out = processor(example["image"], bits_stored=example.get("bits_stored"))
        return out["pixel_values"][0], {"values": torch.as_tensor(np.asarray(example["values"], np.float32))}

    @staticmethod
    def reference(example: dict):
        return np.asarray(example["values"], dtype=np.float32)

    @classmethod
    def decode(cls, output, target_sizes) -> list:
        """Head output -> per-image (V,) values in their units (the image size plays no part)."""
        return [v.float().cpu().numpy() for v in output.values]

    @staticmethod
    def empty_labels(batch_size, tasks, labels, image_size) -> dict:
        slots = max(len(task.labels) for task in tasks)
        return {"values": torch.full((batch_size, slots), float(PADDING_VALUE))}

    @staticmethod
    def fill_labels(out, row, label, task, image_size):
        values = torch.as_tensor(np.asarray(label["values"], np.float32)).reshape(-1)
        out["values"][row, : len(values)] = values

    @staticmethod
    def sample_labels(labels, row, task) -> dict:
        return {"values": labels["values"][row, : len(task.labels)]}


__all__ = ["M2DinoMeasurementHead", "M2DinoMeasurementOutput", "MeasurementType"]
