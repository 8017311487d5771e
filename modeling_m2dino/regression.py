"""Regression (landmark) task type: heatmaps decoded by a soft-argmax into normalised (x, y) points.

Loss: L1 on the normalised points, plus a cross-entropy that pulls each heatmap's spatial softmax towards a
Gaussian around its landmark. The L1 alone trains slowly from a flat heatmap (its gradient is proportional to
the tiny per-cell probabilities); the cross-entropy gives every cell a direct signal.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from .feature_fusion import MultiLevelFusionHead, conv_block
from .task_type_base import PADDING_VALUE, TaskType, has_values_outside


@dataclass
class M2DinoKeypointDetectionOutput(ModelOutput):
    """`keypoints` (batch, points, 2) as normalised (x, y); `heatmaps` the logits they come from."""

    loss: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    heatmaps: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    indices: torch.LongTensor | None = None  # batch positions of these samples (M2DinoForMultiTask)


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """Expected normalised (x, y) under the spatial softmax of each heatmap: (B, P, h, w) -> (B, P, 2)."""
    batch, points, height, width = heatmaps.shape
    probs = heatmaps.float().flatten(2).softmax(-1).view(batch, points, height, width)
    xs = (torch.arange(width, device=heatmaps.device, dtype=probs.dtype) + 0.5) / width
    ys = (torch.arange(height, device=heatmaps.device, dtype=probs.dtype) + 0.5) / height
    return torch.stack([(probs.sum(2) * xs).sum(-1), (probs.sum(3) * ys).sum(-1)], dim=-1)


HEATMAP_LOSS_WEIGHT = 0.1
HEATMAP_SIGMA_CELLS = 1.0  # width of the target Gaussian, in heatmap cells


def gaussian_targets(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised Gaussian bumps around normalised (x, y) points on an (h, w) grid: (B, P, h * w)."""
    height, width = size
    xs = (torch.arange(width, device=points.device, dtype=torch.float32) + 0.5) / width
    ys = (torch.arange(height, device=points.device, dtype=torch.float32) + 0.5) / height
    dx = (xs[None, None, None, :] - points[..., 0, None, None]) * width
    dy = (ys[None, None, :, None] - points[..., 1, None, None]) * height
    bumps = torch.exp(-(dx.pow(2) + dy.pow(2)) / (2 * HEATMAP_SIGMA_CELLS**2)).flatten(2)
    return bumps / bumps.sum(-1, keepdim=True)


class M2DinoKeypointHead(MultiLevelFusionHead):
    """Fuses the multi-level feature maps and predicts one heatmap per landmark at stride 8."""

    def __init__(self, config, task):
        super().__init__(config)
        width = config.decoder_hidden_size
        self.upsample_block = conv_block(width, width)
        self.heatmap = nn.Conv2d(width, task.num_points, 1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...], pooled_output: torch.Tensor):
        hidden = self.fuse_levels(feature_maps)
        hidden = self.upsample_block(F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=False))
        heatmaps = self.heatmap(hidden)
        return soft_argmax(heatmaps), heatmaps


class RegressionType(TaskType):
    """Everything that is specific to landmark regression tasks, in one place."""

    name = "regression"
    head_class = M2DinoKeypointHead
    output_class = M2DinoKeypointDetectionOutput
    output_fields = ("keypoints", "heatmaps")
    order = 3
    csv_name = "Regression"  # the challenge CSVs capitalise this one
    count_field = "num_points"
    label_keys = ("points",)
    slot_dimensions = {"keypoints": (1, lambda task: task.num_points), "heatmaps": (1, lambda task: task.num_points)}

    @classmethod
    def default_labels(cls, count: int) -> list[str]:
        return [f"point_{i}" for i in range(count)]

    @staticmethod
    def empty_labels(batch_size, tasks, labels, image_size) -> dict:
        point_slots = max(task.num_points for task in tasks)
        return {"points": torch.full((batch_size, point_slots, 2), float(PADDING_VALUE))}

    @staticmethod
    def fill_labels(out, row, label, task, image_size):
        points = torch.as_tensor(np.asarray(label["points"]), dtype=torch.float32).reshape(-1, 2)
        out["points"][row, : len(points)] = points

    @staticmethod
    def sample_labels(labels, row, task) -> dict:
        return {"points": labels["points"][row, : task.num_points]}

    @staticmethod
    def output_shapes(config, task, image_size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each head output field: points, and heatmaps at stride 8."""
        heatmap = (2 * (image_size[0] // config.patch_size), 2 * (image_size[1] // config.patch_size))
        return {"keypoints": (task.num_points, 2), "heatmaps": (task.num_points, *heatmap)}

    @classmethod
    def stack_labels(cls, samples: list[dict], task, image_size: tuple[int, int]) -> torch.Tensor:
        """Per-sample `{"points": (P, 2)}` -> FloatTensor (B, P, 2)."""
        points = [torch.as_tensor(p).float() for p in cls.label_entries(samples, "points", task)]
        try:
            return torch.stack(points) if points else torch.zeros(0, task.num_points, 2)
        except RuntimeError:
            raise ValueError(
                f"task {task.id!r} (regression): every label needs ({task.num_points}, 2) points, "
                f"got shapes {[tuple(p.shape) for p in points]}"
            ) from None

    @staticmethod
    def check_labels(labels, task, batch_size: int, image_size: tuple[int, int]) -> torch.Tensor:
        expected = (batch_size, task.num_points, 2)
        if not torch.is_tensor(labels) or labels.shape != expected:
            shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
            raise ValueError(f"task {task.id!r} (regression): labels must be a FloatTensor of shape {expected}, got {shape}")
        if has_values_outside(labels, 0, 1):
            raise ValueError(
                f"task {task.id!r} (regression): points must be finite, normalised (x, y) in [0, 1] of the processed image"
            )
        return labels.float()

    @staticmethod
    def loss(outputs: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, task) -> torch.Tensor:
        keypoints, heatmaps = outputs
        target = gaussian_targets(labels, heatmaps.shape[-2:])
        heatmap_loss = -(target * heatmaps.float().flatten(2).log_softmax(-1)).sum(-1).mean()
        return F.l1_loss(keypoints.float(), labels) + HEATMAP_LOSS_WEIGHT * heatmap_loss

    @staticmethod
    def encode(processor, example: dict) -> tuple[torch.Tensor, dict]:
        """A data example (pixel points) -> processed pixel values and normalised (x, y) points."""
        out = processor(example["image"], points=example["points"], bits_stored=example.get("bits_stored"))
        return out["pixel_values"][0], {"points": out["points"][0]}

    @staticmethod
    def reference(example: dict):
        return np.asarray(example["points"], dtype=np.float32)

    @classmethod
    def decode(cls, output, target_sizes) -> list:
        """Head output -> per-image (P, 2) points in original pixels."""
        return [r["keypoints"].cpu().numpy() for r in cls.post_process(output.keypoints, output.heatmaps, target_sizes)]

    @staticmethod
    def post_process(keypoints: torch.Tensor, heatmaps: torch.Tensor, target_sizes=None) -> list[dict]:
        """Per image: `keypoints` (P, 2) as (x, y), in original pixels with `target_sizes`, and peak `scores`."""
        scores = heatmaps.float().flatten(2).softmax(-1).amax(-1)
        points = keypoints.float()
        if target_sizes is not None:
            sizes = torch.as_tensor(target_sizes, dtype=points.dtype, device=points.device)
            points = points * sizes.flip(-1)[:, None, :]
        return [{"keypoints": p, "scores": s} for p, s in zip(points, scores)]


__all__ = ["M2DinoKeypointDetectionOutput", "M2DinoKeypointHead", "RegressionType", "soft_argmax"]
