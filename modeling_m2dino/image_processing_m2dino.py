"""M2DinoImageProcessor: ultrasound images of any size, bit depth and colour layout -> model inputs, and the
model's outputs -> masks, boxes and landmarks in original-image pixels.

Geometry: every image is resized to a square of `size`; boxes become normalised (cx, cy, w, h) and points
normalised (x, y), both relative to the processed image, so mapping back only needs each original size.
"""

import numpy as np
import torch
from torch.nn import functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .detection import DetectionType, corners_to_center
from .regression import RegressionType
from .segmentation import SegmentationType

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def image_to_tensor(image, bits_stored: int | None = None) -> torch.Tensor:
    """One image -> float (3, H, W) in [0, 1].

    Accepts PIL images (any mode), numpy arrays channels-last (H, W), (H, W, 1|3|4), and torch tensors
    channels-first (H, W), (1|3|4, H, W). Integer data is scaled by `2**bits_stored - 1` when given (DICOM),
    else by its dtype's range (uint16 by 65535, whatever its byte order); float data must already lie in [0, 1].
    """
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL, without importing it for non-PIL users
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image)
            array = array.astype(np.uint16) if image.mode != "I" else array.astype(np.int32)
        elif image.mode in ("L", "RGB"):
            array = np.asarray(image)
        else:  # palette, RGBA, LA, CMYK, ...: let PIL resolve colours; alpha is dropped
            array = np.asarray(image.convert("RGB"))
        image = array
    if isinstance(image, np.ndarray):
        if image.dtype.byteorder not in ("=", "|"):
            image = image.astype(image.dtype.newbyteorder("="))
        if image.ndim == 3:
            image = np.moveaxis(image, -1, 0)
        tensor = torch.from_numpy(np.array(image, copy=True, order="C"))
    elif torch.is_tensor(image):
        tensor = image.detach().cpu()
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}: give a PIL image, a numpy array or a tensor")
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(f"an image must be (H, W) or have 1, 3 or 4 channels; got shape {tuple(tensor.shape)}")
    tensor = tensor[:3]
    if tensor.dtype == torch.bool:
        raise ValueError("boolean images are not supported")
    if tensor.is_floating_point():
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise ValueError("image contains NaN or infinite values")
    else:
        max_value = 2**bits_stored - 1 if bits_stored else _integer_range(tensor.dtype)
        tensor = tensor.float() / max_value
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return tensor


def _integer_range(dtype: torch.dtype) -> int:
    # torch has no uint16 arithmetic everywhere; numpy uint16 arrives as torch.uint16
    return {torch.uint8: 255, torch.uint16: 65535, torch.int16: 32767, torch.int32: 65535}.get(
        dtype, torch.iinfo(dtype).max if not dtype.is_floating_point else 1
    )


def image_size(image) -> tuple[int, int]:
    """(height, width) of a PIL image, a channels-last array or a channels-first tensor."""
    if hasattr(image, "size") and hasattr(image, "mode"):
        return image.size[1], image.size[0]
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.shape[-2]), int(image.shape[-1])


class M2DinoImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict | int | None = None,
        do_resize: bool = True,
        do_normalize: bool = True,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**{k: v for k, v in kwargs.items() if k not in ("image_processor_type", "auto_map")})
        size = size if size is not None else 224
        self.size = {"height": size, "width": size} if isinstance(size, int) else dict(size)
        if self.size["height"] != self.size["width"] or self.size["height"] % 16:
            raise ValueError(f"size must be a square whose side is a multiple of 16, got {self.size}")
        self.do_resize = do_resize
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean if image_mean is not None else IMAGENET_MEAN)
        self.image_std = list(image_std if image_std is not None else IMAGENET_STD)

    @classmethod
    def from_config(cls, config, **kwargs) -> "M2DinoImageProcessor":
        """The processor matching a model config (its image size and normalisation)."""
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return cls(size=size, image_mean=config.image_mean, image_std=config.image_std, **kwargs)

    def preprocess(
        self,
        images,
        masks=None,
        boxes=None,
        points=None,
        bits_stored: int | list[int] | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Images (one or a list) -> `pixel_values` (B, 3, S, S) and `original_sizes` (B, 2) as (height, width).

        With `masks` (H, W class indices per image) -> `masks` (B, S, S) LongTensor, nearest-neighbour resized.
        With `boxes` ((n, 4) x_min, y_min, x_max, y_max pixels per image) -> `boxes`, a list of normalised
        (cx, cy, w, h). With `points` ((P, 2) x, y pixels per image) -> `points` (B, P, 2) normalised (x, y).
        """
        if return_tensors not in ("pt", None):
            raise ValueError(f"M2DinoImageProcessor returns torch tensors only (return_tensors='pt'), got {return_tensors!r}")
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if not images:
            raise ValueError("no images given")
        wrap = (lambda x: None if x is None else [x]) if single else (lambda x: x)
        masks, boxes, points = wrap(masks), wrap(boxes), wrap(points)
        bits = bits_stored if isinstance(bits_stored, (list, tuple)) else [bits_stored] * len(images)
        side = self.size["height"]

        pixel_values, sizes = [], []
        for image, image_bits in zip(images, bits):
            tensor = image_to_tensor(image, image_bits)
            sizes.append(tuple(tensor.shape[-2:]))
            if self.do_resize and tuple(tensor.shape[-2:]) != (side, side):
                tensor = F.interpolate(tensor[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]
            pixel_values.append(tensor)
        pixel_values = torch.stack(pixel_values)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean)[:, None, None]
            std = torch.tensor(self.image_std)[:, None, None]
            pixel_values = (pixel_values - mean) / std
        data = {"pixel_values": pixel_values, "original_sizes": torch.tensor(sizes, dtype=torch.long)}
        if masks is not None:
            data["masks"] = torch.stack([self.resize_mask(m, size, i) for i, (m, size) in enumerate(zip(masks, sizes))])
        if boxes is not None:
            data["boxes"] = [self.normalize_boxes(b, size, i) for i, (b, size) in enumerate(zip(boxes, sizes))]
        if points is not None:
            data["points"] = torch.stack([self.normalize_points(p, size, i) for i, (p, size) in enumerate(zip(points, sizes))])
        return BatchFeature(data=data)

    def resize_mask(self, mask, original_size, index: int = 0) -> torch.Tensor:
        mask = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)
        if tuple(mask.shape) != tuple(original_size):
            raise ValueError(f"mask {index} has shape {tuple(mask.shape)}, its image is {tuple(original_size)}")
        side = self.size["height"]
        if not self.do_resize or tuple(mask.shape) == (side, side):
            return mask.long()
        return F.interpolate(mask[None, None].float(), size=(side, side), mode="nearest-exact")[0, 0].long()

    @staticmethod
    def normalize_boxes(boxes, original_size, index: int = 0) -> torch.Tensor:
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        height, width = original_size
        if (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise ValueError(f"boxes of image {index} need x_max > x_min and y_max > y_min, got {boxes.tolist()}")
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return corners_to_center(boxes / scale).clamp(0, 1)

    @staticmethod
    def normalize_points(points, original_size, index: int = 0) -> torch.Tensor:
        points = torch.as_tensor(np.asarray(points, dtype=np.float32))
        if points.dim() != 2 or points.shape[-1] != 2:
            raise ValueError(f"points of image {index} must be (P, 2) as (x, y), got shape {tuple(points.shape)}")
        height, width = original_size
        return points / torch.tensor([width, height], dtype=torch.float32)

    def post_process_semantic_segmentation(self, outputs, target_sizes=None) -> list[torch.Tensor]:
        """One (H, W) class-index mask per image, at each `target_sizes` (height, width) when given."""
        return SegmentationType.post_process(outputs.logits, target_sizes)

    def post_process_object_detection(self, outputs, threshold: float = 0.5, target_sizes=None, top_k: int | None = None):
        """Per image a dict of `scores`, `labels`, `boxes` (x_min, y_min, x_max, y_max; original pixels with
        `target_sizes`). `top_k` keeps the k best boxes whatever their score (the challenge's one box: 1)."""
        return DetectionType.post_process(outputs.logits, outputs.pred_boxes, threshold, target_sizes, top_k)

    def post_process_keypoint_detection(self, outputs, target_sizes=None) -> list[dict]:
        """Per image a dict with `keypoints` (P, 2) as (x, y), in original pixels with `target_sizes`, and `scores`."""
        return RegressionType.post_process(outputs.keypoints, outputs.heatmaps, target_sizes)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Written so that AutoImageProcessor with trust_remote_code finds the class without this package.
        self.auto_map = {"AutoImageProcessor": "image_processing_m2dino.M2DinoImageProcessor"}
        return super().save_pretrained(save_directory, *args, **kwargs)


__all__ = ["M2DinoImageProcessor", "image_to_tensor", "image_size"]
