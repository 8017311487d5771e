"""Detection task type: query boxes pooled from the feature map, DETR-style set loss, box post-processing.

Each query attends over the patch grid; its box centre starts at the attention-weighted mean patch position
(a soft-argmax, which learns quickly from few images) and is refined by a small offset, its size and class come
from the pooled features. Outputs follow DETR: `logits` (batch, queries, classes + 1 for "no object") and
`pred_boxes` (batch, queries, 4) as normalised (cx, cy, w, h).
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.utils import ModelOutput

from .task_type_base import PADDING_VALUE, TaskType, has_values_outside

CLASS_COST, L1_COST, GIOU_COST = 1.0, 5.0, 2.0
NO_OBJECT_WEIGHT = 0.1
# Weight of the cross-entropy between a matched query's attention and its box's footprint on the patch grid:
# it teaches the query where to look directly, instead of only through the box it derives from the attention.
ATTENTION_LOSS_WEIGHT = 0.5


@dataclass
class M2DinoObjectDetectionOutput(ModelOutput):
    """DETR-style detection output, plus the backbone's router outputs."""

    loss: torch.Tensor | None = None
    loss_dict: dict | None = None
    logits: torch.Tensor | None = None
    pred_boxes: torch.Tensor | None = None
    attention_maps: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None
    aux_loss: torch.Tensor | None = None
    indices: torch.LongTensor | None = None  # batch positions of these samples (M2DinoForMultiTask)


def center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def corners_to_center(boxes: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_problem(box, width: float, height: float) -> tuple[int, str] | None:
    """Why a box (x_min, y_min, x_max, y_max) in pixels of a `width` x `height` image is not a valid label, with the
    index of the offending coordinate; None for a valid box: finite, not empty, inside the image (borders included)."""
    x_min, y_min, x_max, y_max = box
    if not all(np.isfinite(v) for v in box):
        return next(i for i, v in enumerate(box) if not np.isfinite(v)), f"box {list(box)} is not finite"
    if x_max <= x_min:
        return 2, f"x_max {x_max} <= x_min {x_min}"
    if y_max <= y_min:
        return 3, f"y_max {y_max} <= y_min {y_min}"
    for index, (value, limit) in enumerate(zip(box, (width, height, width, height))):
        if value < 0 or value > limit:
            return index, f"box {list(box)} lies outside the {width}x{height} image (width x height)"
    return None


def generalized_box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of corner boxes (N, 4) x (M, 4) -> (N, M)."""
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]).clamp(min=0) * (boxes_a[:, 3] - boxes_a[:, 1]).clamp(min=0)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]).clamp(min=0) * (boxes_b[:, 3] - boxes_b[:, 1]).clamp(min=0)
    top_left = torch.max(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.min(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    iou = intersection / union.clamp(min=1e-7)
    hull = (torch.max(boxes_a[:, None, 2:], boxes_b[None, :, 2:]) - torch.min(boxes_a[:, None, :2], boxes_b[None, :, :2]))
    hull_area = hull.clamp(min=0).prod(dim=-1)
    return iou - (hull_area - union) / hull_area.clamp(min=1e-7)


def patch_centers(height: int, width: int, device, dtype) -> torch.Tensor:
    """Normalised (x, y) centres of an (height, width) patch grid, row-major: (height * width, 2)."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)


def box_footprint(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The share of each (h, w) grid cell's area that each normalised (cx, cy, w, h) box covers, normalised
    to sum to one per box: (n, h * w)."""
    height, width = size
    corners = center_to_corners(boxes)
    edges_x = torch.arange(width + 1, device=boxes.device, dtype=boxes.dtype) / width
    edges_y = torch.arange(height + 1, device=boxes.device, dtype=boxes.dtype) / height
    overlap_x = (torch.min(corners[:, None, 2], edges_x[None, 1:]) - torch.max(corners[:, None, 0], edges_x[None, :-1])).clamp(min=0)
    overlap_y = (torch.min(corners[:, None, 3], edges_y[None, 1:]) - torch.max(corners[:, None, 1], edges_y[None, :-1])).clamp(min=0)
    area = (overlap_y[:, :, None] * overlap_x[:, None, :]).flatten(1)
    return area / area.sum(-1, keepdim=True).clamp(min=1e-12)


class M2DinoDetectionHead(nn.Module):
    """Each query attends over the patch grid; its box is the extent of what it attends to.

    The attention-weighted mean of the patch centres gives the box centre (a soft-argmax), and their spread
    the box size (a box of width w holds positions with standard deviation w / sqrt(12)), each patch counted
    as its whole cell; small learned corrections refine both. Finding the object therefore sizes the box
    too, which learns from few images, where regressing sizes from pooled features does not.
    """

    def __init__(self, config, task):
        super().__init__()
        width = config.decoder_hidden_size
        self.input_projection = nn.Sequential(nn.Conv2d(config.hidden_size, width, 3, padding=1), nn.GELU())
        self.position_projection = nn.Linear(2, width)
        self.queries = nn.Parameter(torch.zeros(config.detection_num_queries, width))
        self.key_projection = nn.Linear(width, width)
        self.query_mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.class_head = nn.Linear(width, task.num_classes + 1)
        self.center_offset = nn.Linear(width, 2)
        self.size_scale = nn.Linear(width, 2)

    def forward(self, feature_maps: tuple[torch.Tensor, ...], pooled_output: torch.Tensor):
        memory = self.input_projection(feature_maps[-1])
        height, width = memory.shape[-2:]
        positions = patch_centers(height, width, memory.device, memory.dtype)
        memory = memory.flatten(2).transpose(1, 2) + self.position_projection(positions)
        attention = torch.einsum("qd,bnd->bqn", self.queries, self.key_projection(memory)) / memory.shape[-1] ** 0.5
        attention = attention.softmax(dim=-1)
        pooled = self.query_mlp(attention @ memory + self.queries)
        mean = attention @ positions
        cell = positions.new_tensor([1.0 / width, 1.0 / height])
        variance = attention @ positions.pow(2) - mean.pow(2) + cell.pow(2) / 12
        extent = (12 * variance.clamp(min=0)).sqrt()
        center = mean + 0.5 * torch.tanh(self.center_offset(pooled)) * cell
        size = extent * torch.exp(torch.tanh(self.size_scale(pooled)))
        boxes = torch.cat([center, size], dim=-1)  # unclamped, so every part keeps a gradient; post-processing clips
        return self.class_head(pooled), boxes, attention.view(*attention.shape[:2], height, width)


class DetectionType(TaskType):
    """Everything that is specific to detection tasks, in one place."""

    name = "detection"
    head_class = M2DinoDetectionHead
    output_class = M2DinoObjectDetectionOutput
    output_fields = ("logits", "pred_boxes", "attention_maps")
    order = 2
    csv_name = "detection"
    label_keys = ("boxes", "box_labels")
    slot_dimensions = {"logits": (2, lambda task: task.num_classes + 1)}  # the "no object" logit last

    @staticmethod
    def init_head(head, config):
        init.normal_(head.queries, std=1.0)

    @staticmethod
    def empty_labels(batch_size, tasks, labels, image_size) -> dict:
        box_slots = max([len(np.asarray(l["boxes"]).reshape(-1, 4)) for l in labels if "boxes" in l] + [1])
        return {
            "boxes": torch.full((batch_size, box_slots, 4), float(PADDING_VALUE)),
            "box_labels": torch.full((batch_size, box_slots), PADDING_VALUE, dtype=torch.long),
        }

    @staticmethod
    def fill_labels(out, row, label, task, image_size):
        boxes = torch.as_tensor(np.asarray(label["boxes"]), dtype=torch.float32).reshape(-1, 4)
        out["boxes"][row, : len(boxes)] = boxes
        out["box_labels"][row, : len(boxes)] = torch.as_tensor(np.asarray(label["class_labels"])).long().reshape(-1)

    @staticmethod
    def sample_labels(labels, row, task) -> dict:
        present = labels["box_labels"][row] != PADDING_VALUE
        return {"class_labels": labels["box_labels"][row][present], "boxes": labels["boxes"][row][present]}

    @staticmethod
    def output_shapes(config, task, image_size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each head output field: per query, class logits with "no object" last, a box, and
        its attention over the patch grid."""
        queries, grid = config.detection_num_queries, (image_size[0] // config.patch_size, image_size[1] // config.patch_size)
        return {"logits": (queries, task.num_classes + 1), "pred_boxes": (queries, 4), "attention_maps": (queries, *grid)}

    @staticmethod
    def stack_labels(samples: list[dict], task, image_size: tuple[int, int]) -> list[dict]:
        """Per-sample `{"class_labels": (n,), "boxes": (n, 4)}` stay a list (n differs between images)."""
        return [
            {"class_labels": torch.as_tensor(s.get("class_labels")), "boxes": torch.as_tensor(s.get("boxes"))}
            if s.get("class_labels") is not None and s.get("boxes") is not None
            else s
            for s in samples
        ]

    @staticmethod
    def check_labels(labels, task, batch_size: int, image_size: tuple[int, int]) -> list[dict]:
        if not isinstance(labels, (list, tuple)) or len(labels) != batch_size:
            raise ValueError(f"task {task.id!r} (detection): labels must be a list of {batch_size} dicts")
        checked = []
        for i, target in enumerate(labels):
            if not isinstance(target, dict) or "class_labels" not in target or "boxes" not in target:
                raise ValueError(f"task {task.id!r} (detection): label {i} needs 'class_labels' and 'boxes'")
            classes = torch.as_tensor(target["class_labels"]).long().reshape(-1)
            boxes = torch.as_tensor(target["boxes"]).float()
            if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != classes.shape[0]:
                raise ValueError(
                    f"task {task.id!r} (detection): label {i} boxes must be (n, 4) with n class labels, "
                    f"got boxes {tuple(boxes.shape)} and {classes.shape[0]} labels"
                )
            if has_values_outside(classes, 0, task.num_classes - 1):
                raise ValueError(f"task {task.id!r} (detection): label {i} class labels must lie in 0..{task.num_classes - 1}")
            if has_values_outside(boxes, 0, 1) or (boxes[:, 2:] <= 0).any():
                raise ValueError(
                    f"task {task.id!r} (detection): label {i} boxes must be normalised (cx, cy, w, h) in [0, 1] "
                    f"with positive size, got {boxes.tolist()}"
                )
            checked.append({"class_labels": classes, "boxes": boxes})
        return checked

    @staticmethod
    def match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hungarian matching of queries to targets per image (query i <-> target i when both counts are one)."""
        matches = []
        with torch.no_grad():
            probs = logits.float().softmax(-1)
            for image_probs, image_boxes, target in zip(probs, boxes.float(), targets):
                num_queries, num_targets = image_boxes.shape[0], target["boxes"].shape[0]
                if num_targets == 0:
                    matches.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
                    continue
                if num_queries == 1 and num_targets == 1:
                    matches.append((torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)))
                    continue
                cost = (
                    -CLASS_COST * image_probs[:, target["class_labels"]]
                    + L1_COST * torch.cdist(image_boxes, target["boxes"], p=1)
                    - GIOU_COST * generalized_box_iou(center_to_corners(image_boxes), center_to_corners(target["boxes"]))
                )
                query_idx, target_idx = linear_sum_assignment(cost.cpu().numpy())
                matches.append((torch.as_tensor(query_idx, dtype=torch.long), torch.as_tensor(target_idx, dtype=torch.long)))
        return matches

    @classmethod
    def loss(cls, outputs: tuple[torch.Tensor, torch.Tensor], targets: list[dict], task) -> torch.Tensor:
        """Class cross-entropy (no-object down-weighted) + L1 + GIoU on matched boxes + attention footprint."""
        logits, boxes, attention_maps = outputs
        targets = [{k: v.to(logits.device) for k, v in t.items()} for t in targets]
        matches = cls.match(logits, boxes, targets)
        num_classes = logits.shape[-1] - 1
        target_classes = torch.full(logits.shape[:2], num_classes, dtype=torch.long, device=logits.device)
        matched_pred, matched_target, matched_attention = [], [], []
        for image, ((query_idx, target_idx), target) in enumerate(zip(matches, targets)):
            target_classes[image, query_idx] = target["class_labels"][target_idx]
            matched_pred.append(boxes[image, query_idx])
            matched_target.append(target["boxes"][target_idx])
            matched_attention.append(attention_maps[image, query_idx])
        class_weights = torch.ones(num_classes + 1, device=logits.device)
        class_weights[-1] = NO_OBJECT_WEIGHT
        class_loss = F.cross_entropy(logits.float().transpose(1, 2), target_classes, weight=class_weights)
        pred, target = torch.cat(matched_pred).float(), torch.cat(matched_target).float()
        num_boxes = max(pred.shape[0], 1)
        l1 = F.l1_loss(pred, target, reduction="sum") / num_boxes
        giou = (1 - torch.diag(generalized_box_iou(center_to_corners(pred), center_to_corners(target)))).sum() / num_boxes
        attention = torch.cat(matched_attention).float()
        footprint = box_footprint(target, attention.shape[-2:])
        attention_loss = -(footprint * attention.flatten(1).clamp(min=1e-8).log()).sum() / num_boxes
        return CLASS_COST * class_loss + L1_COST * l1 + GIOU_COST * giou + ATTENTION_LOSS_WEIGHT * attention_loss

    @staticmethod
    def encode(processor, example: dict) -> tuple[torch.Tensor, dict]:
        """A data example (pixel boxes) -> processed pixel values and normalised (cx, cy, w, h) boxes."""
        out = processor(example["image"], boxes=example["boxes"], bits_stored=example.get("bits_stored"))
        classes = torch.as_tensor(np.asarray(example["class_labels"]), dtype=torch.long).reshape(-1)
        return out["pixel_values"][0], {"class_labels": classes, "boxes": out["boxes"][0]}

    @staticmethod
    def reference(example: dict):
        return np.asarray(example["boxes"], dtype=np.float32).reshape(-1, 4)

    @classmethod
    def decode(cls, output, target_sizes) -> list:
        """Head output -> per image every query's box (original pixels) with its score, best first."""
        results = cls.post_process(output.logits, output.pred_boxes, target_sizes=target_sizes, top_k=output.logits.shape[1])
        return [{"boxes": r["boxes"].cpu().numpy(), "scores": r["scores"].cpu().numpy()} for r in results]

    @staticmethod
    def post_process(logits, pred_boxes, threshold: float = 0.5, target_sizes=None, top_k: int | None = None) -> list[dict]:
        """Per image: `scores`, `labels` and `boxes` (x_min, y_min, x_max, y_max; original pixels with `target_sizes`)."""
        probs = logits.float().softmax(-1)[..., :-1]
        scores, labels = probs.max(-1)
        corners = center_to_corners(pred_boxes.float()).clamp(0, 1)
        if target_sizes is not None:
            sizes = torch.as_tensor(target_sizes, dtype=corners.dtype, device=corners.device)
            corners = corners * torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)[:, None, :]
        results = []
        for image_scores, image_labels, image_boxes in zip(scores, labels, corners):
            order = image_scores.argsort(descending=True)
            keep = order[image_scores[order] > threshold] if top_k is None else order[:top_k]
            results.append({"scores": image_scores[keep], "labels": image_labels[keep], "boxes": image_boxes[keep]})
        return results


__all__ = [
    "M2DinoObjectDetectionOutput",
    "M2DinoDetectionHead",
    "DetectionType",
    "box_problem",
    "center_to_corners",
    "corners_to_center",
    "generalized_box_iou",
]
