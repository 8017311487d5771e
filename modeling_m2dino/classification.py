"""Classification task type: a linear head on the class token, the mean patch token and the patch grid's four
quadrant means; cross-entropy."""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import ImageClassifierOutput

from .feature_fusion import PooledFeaturesHead
from .task_type_base import PADDING_VALUE, TaskType, has_values_outside


@dataclass
class M2DinoImageClassifierOutput(ImageClassifierOutput):
    """`logits` (batch, classes), plus the backbone's router outputs."""

    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    indices: torch.LongTensor | None = None  # batch positions of these samples (M2DinoForMultiTask)


class M2DinoClassificationHead(PooledFeaturesHead):
    """A linear classifier on the pooled features (`PooledFeaturesHead`): the DINOv3 linear-probe recipe, plus the
    quadrant means, so that classes told apart by where something lies (fetal position) can be."""

    def __init__(self, config, task):
        super().__init__(config)
        self.classifier = nn.Linear(self.pooled_features_size, task.num_classes)

    def forward(self, feature_maps: tuple[torch.Tensor, ...], pooled_output: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(feature_maps, pooled_output))


class ClassificationType(TaskType):
    """Everything that is specific to classification tasks, in one place."""

    name = "classification"
    head_class = M2DinoClassificationHead
    output_class = M2DinoImageClassifierOutput
    output_fields = ("logits",)
    order = 1
    csv_name = "classification"
    min_count = 2
    label_keys = ("class_labels",)
    slot_dimensions = {"logits": (1, lambda task: task.num_classes)}

    @staticmethod
    def empty_labels(batch_size, tasks, labels, image_size) -> dict:
        return {"class_labels": torch.full((batch_size,), PADDING_VALUE, dtype=torch.long)}

    @staticmethod
    def fill_labels(out, row, label, task, image_size):
        out["class_labels"][row] = int(torch.as_tensor(label["class_labels"]).reshape(-1)[0])

    @staticmethod
    def sample_labels(labels, row, task) -> dict:
        return {"class_labels": labels["class_labels"][row]}

    @staticmethod
    def output_shapes(config, task, image_size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each head output field."""
        return {"logits": (task.num_classes,)}

    @classmethod
    def stack_labels(cls, samples: list[dict], task, image_size: tuple[int, int]) -> torch.Tensor:
        """Per-sample `{"class_labels": int}` -> LongTensor (B,)."""
        values = [int(torch.as_tensor(v).reshape(-1)[0]) for v in cls.label_entries(samples, "class_labels", task)]
        return torch.tensor(values, dtype=torch.long)

    @staticmethod
    def check_labels(labels, task, batch_size: int, image_size: tuple[int, int]) -> torch.Tensor:
        if not torch.is_tensor(labels) or labels.shape != (batch_size,) or labels.is_floating_point():
            shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
            raise ValueError(
                f"task {task.id!r} (classification): labels must be a LongTensor of shape ({batch_size},), got {shape}"
            )
        if has_values_outside(labels, 0, task.num_classes - 1):
            raise ValueError(
                f"task {task.id!r} (classification): class labels must lie in 0..{task.num_classes - 1}, "
                f"found {labels.min().item()}..{labels.max().item()}"
            )
        return labels.long()

    @staticmethod
    def encode(processor, example: dict) -> tuple[torch.Tensor, dict]:
        """A data example -> processed pixel values and the model's label."""
        out = processor(example["image"], bits_stored=example.get("bits_stored"))
        return out["pixel_values"][0], {"class_labels": int(example["label"])}

    @staticmethod
    def reference(example: dict):
        return int(example["label"])

    @staticmethod
    def decode(output, target_sizes) -> list:
        """Head output -> per-image class probabilities."""
        return list(output.logits.float().softmax(-1).cpu().numpy())

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, task) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)


__all__ = ["M2DinoImageClassifierOutput", "M2DinoClassificationHead", "ClassificationType"]
