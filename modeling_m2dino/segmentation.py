"""Segmentation task type: a multi-level upsampling head, Dice + cross-entropy, and mask post-processing."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SemanticSegmenterOutput

from .feature_fusion import MultiLevelFusionHead, conv_block
from .task_type_base import PADDING_VALUE, TaskType, has_values_outside


@dataclass
class M2DinoSemanticSegmenterOutput(SemanticSegmenterOutput):
    """`logits` (batch, classes, height / 4, width / 4), plus the backbone's router outputs."""

    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    indices: torch.LongTensor | None = None  # batch positions of these samples (M2DinoForMultiTask)


class M2DinoSegmentationHead(MultiLevelFusionHead):
    """Fuses the multi-level feature maps (all at stride 16) and upsamples twice to stride 4."""

    def __init__(self, config, task):
        super().__init__(config)
        width = config.decoder_hidden_size
        self.upsample_blocks = nn.ModuleList(conv_block(width, width) for _ in range(2))
        self.classifier = nn.Conv2d(width, task.num_classes, 1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...], pooled_output: torch.Tensor) -> torch.Tensor:
        hidden = self.fuse_levels(feature_maps)
        for block in self.upsample_blocks:
            hidden = block(F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False))
        return self.classifier(hidden)


class SegmentationType(TaskType):
    """Everything that is specific to segmentation tasks, in one place."""

    name = "segmentation"
    head_class = M2DinoSegmentationHead
    output_class = M2DinoSemanticSegmenterOutput
    output_fields = ("logits",)
    order = 0
    csv_name = "segmentation"
    min_count = 2  # background and at least one structure
    label_keys = ("masks",)
    slot_dimensions = {"logits": (1, lambda task: task.num_classes)}

    @staticmethod
    def empty_labels(batch_size, tasks, labels, image_size) -> dict:
        return {"masks": torch.full((batch_size, *image_size), PADDING_VALUE, dtype=torch.int32)}

    @staticmethod
    def fill_labels(out, row, label, task, image_size):
        mask = torch.as_tensor(np.asarray(label["mask"]))
        if tuple(mask.shape) != tuple(image_size):
            raise ValueError(f"sample {row} (task {task.id!r}): mask {tuple(mask.shape)} is not at the processed size {image_size}")
        out["masks"][row] = mask.to(torch.int32)

    @staticmethod
    def sample_labels(labels, row, task) -> dict:
        return {"mask": labels["masks"][row].long()}

    @staticmethod
    def output_shapes(config, task, image_size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each head output field: logits at stride 4."""
        return {"logits": (task.num_classes, 4 * (image_size[0] // config.patch_size), 4 * (image_size[1] // config.patch_size))}

    @classmethod
    def stack_labels(cls, samples: list[dict], task, image_size: tuple[int, int]) -> torch.Tensor:
        """Per-sample `{"mask": (H, W)}` -> LongTensor (B, H, W)."""
        masks = [torch.as_tensor(mask).long() for mask in cls.label_entries(samples, "mask", task)]
        return torch.stack(masks) if masks else torch.zeros(0, *image_size, dtype=torch.long)

    @staticmethod
    def check_labels(labels, task, batch_size: int, image_size: tuple[int, int]) -> torch.Tensor:
        if not torch.is_tensor(labels) or labels.shape != (batch_size, *image_size):
            shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
            raise ValueError(
                f"task {task.id!r} (segmentation): labels must be a LongTensor of shape {(batch_size, *image_size)} "
                f"(masks at the processed size), got {shape}"
            )
        if labels.is_floating_point():
            raise ValueError(f"task {task.id!r} (segmentation): mask labels must hold integer class indices")
        if has_values_outside(labels, 0, task.num_classes - 1):
            raise ValueError(
                f"task {task.id!r} (segmentation): mask values must lie in 0..{task.num_classes - 1}, "
                f"found {labels.min().item()}..{labels.max().item()}"
            )
        return labels.long()

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, task) -> torch.Tensor:
        """Cross-entropy plus soft Dice over the foreground classes, at the label resolution."""
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        cross_entropy = F.cross_entropy(logits, labels)
        probs = logits.softmax(dim=1)[:, 1:]
        one_hot = F.one_hot(labels, task.num_classes).permute(0, 3, 1, 2)[:, 1:].float()
        intersection = (probs * one_hot).sum(dim=(0, 2, 3))
        denominator = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
        dice = (2 * intersection + 1.0) / (denominator + 1.0)
        return cross_entropy + (1 - dice).mean()

    @staticmethod
    def encode(processor, example: dict) -> tuple[torch.Tensor, dict]:
        """A data example (original pixels) -> processed pixel values and the model's label."""
        out = processor(example["image"], masks=example["mask"], bits_stored=example.get("bits_stored"))
        return out["pixel_values"][0], {"mask": out["masks"][0]}

    @staticmethod
    def reference(example: dict):
        """The example's label in original pixels, as the metrics take it."""
        return np.asarray(example["mask"])

    @classmethod
    def decode(cls, output, target_sizes) -> list:
        """Head output -> per-image predictions in original pixels, as the metrics take them."""
        return [mask.cpu().numpy() for mask in cls.post_process(output.logits, target_sizes)]

    @staticmethod
    def post_process(logits: torch.Tensor, target_sizes=None) -> list[torch.Tensor]:
        """Class-index masks (one per image), upsampled to each target (height, width) when given."""
        masks = []
        for i in range(logits.shape[0]):
            image_logits = logits[i : i + 1].float()
            if target_sizes is not None:
                size = tuple(int(s) for s in target_sizes[i])
                image_logits = F.interpolate(image_logits, size=size, mode="bilinear", align_corners=False)
            masks.append(image_logits[0].argmax(dim=0))
        return masks


__all__ = ["M2DinoSemanticSegmenterOutput", "M2DinoSegmentationHead", "SegmentationType"]
