"""M2DinoImageProcessor: ultrasound images of any size, bit depth and colour layout -> model inputs, and the
model's outputs -> masks, boxes and landmarks in original-image pixels.

Geometry: every image is resized to a square of `size`; boxes become normalised (cx, cy, w, h) and points
normalised (x, y), both relative to the processed image, so mapping back only needs each original size.

Pixel values: the one rule for integer images lives here (`integer_image_to_unit_range`); the model takes only the
normalised float output and refuses integer tensors. Float images must already lie in [0, 1] unless the caller states
their range (`input_range`).
"""

from typing import TypedDict

import numpy as np
import torch
from torch.nn import functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ChannelDimension

from .detection import DetectionType, box_problem, corners_to_center
from .regression import RegressionType

try:
    from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
except ImportError:  # releases before `return_segmentation_scores` existed

    class SemanticSegmentationPostProcessorOutput(BatchFeature):
        """`segmentation` (H, W) and `segmentation_scores` (num_labels, H, W) of one image."""

# PIL modes holding more than 8 bits per pixel: "I;16*" are 16-bit, "I" is int32 (how Pillow opens most 16-bit PNGs).
PIL_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# Keys transformers itself writes into a saved image processor's JSON; they are not options of this processor.
_BOOKKEEPING_KEYS = ("image_processor_type", "processor_class", "feature_extractor_type", "_processor_class")


class M2DinoImageProcessorKwargs(TypedDict, total=False):
    """Every keyword `M2DinoImageProcessor.preprocess` accepts besides the images and their labels.

    The first six are also `__init__` options (the per-call value overrides the instance's for that call).
    """

    do_resize: bool | None
    size: int | dict[str, int] | None
    do_normalize: bool | None
    image_mean: float | list[float] | tuple[float, ...] | None
    image_std: float | list[float] | tuple[float, ...] | None
    do_convert_rgb: bool | None
    input_data_format: str | ChannelDimension | None
    return_tensors: str | None
    bits_stored: int | list[int | None] | None
    input_range: tuple[float, float] | None


def integer_image_to_unit_range(values: torch.Tensor, bits_stored: int | None = None, name: str = "image") -> torch.Tensor:
    """The one rule for integer pixel data: float32 in [0, 1].

    With `bits_stored` (DICOM's BitsStored, or any known bit depth) values are divided by `2**bits_stored - 1`.
    Without it, 8-bit types are divided by 255 and every wider integer type by 65535: wider integers reach this
    package as 16-bit data (uint16 arrays, PIL's "I;16" and "I" modes of a 16-bit PNG, DICOM frames). Values the
    rule cannot represent are an error naming `name`, never clipped: negative values, or values above the maximum
    (pass `bits_stored`, or a float image with `input_range`).
    """
    if values.dtype == torch.bool:
        raise ValueError(f"{name} is boolean; give integer or float pixel values")
    if values.dtype in (torch.uint16, torch.uint32, torch.uint64):  # few torch ops support these types
        values = values.to(torch.int64)
    if bits_stored is not None:
        if isinstance(bits_stored, bool) or not isinstance(bits_stored, (int, np.integer)) or not 1 <= bits_stored <= 32:
            raise ValueError(f"bits_stored for {name} must be an integer in 1..32, got {bits_stored!r}")
        max_value = 2 ** int(bits_stored) - 1
    elif values.dtype in (torch.uint8, torch.int8):
        max_value = 255
    else:
        max_value = 65535
    # Range checks branch on tensor values, which a torch.compile graph cannot do: eager only.
    if values.numel() and not torch.compiler.is_compiling():
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > max_value:
            if bits_stored is not None:
                how = f"bits_stored={bits_stored}"
            else:
                how = f"its {values.dtype} data taken as {max_value.bit_length()}-bit"
            raise ValueError(
                f"{name} has integer values {low}..{high}, outside 0..{max_value} ({how}); pass the right "
                "bits_stored, or a float image with input_range=(min, max)"
            )
    return values.float() / max_value


def _pil_to_array(image) -> np.ndarray:
    if image.mode in PIL_WIDE_MODES:
        # 16-bit data keeps its values: converting to "L" or "RGB" would clip them to 255.
        return np.asarray(image).astype(np.int32 if image.mode == "I" else np.uint16)
    if image.mode in ("L", "RGB", "RGBA"):
        return np.asarray(image)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("RGB"))  # palette, CMYK, YCbCr, 1-bit, ...: let PIL resolve the colours


def _channels_first(tensor: torch.Tensor, input_data_format, channels_last_by_default: bool, index: int) -> torch.Tensor:
    """(H, W) or (C, H, W) / (H, W, C) -> (C, H, W)."""
    if tensor.dim() == 2:
        return tensor[None]
    if tensor.dim() != 3:
        raise ValueError(f"image {index} must be (H, W) or have a channel axis; got shape {tuple(tensor.shape)}")
    if input_data_format is not None:
        try:
            layout = ChannelDimension(input_data_format)
        except ValueError:
            raise ValueError(
                f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}"
            ) from None
        return tensor.permute(2, 0, 1) if layout == ChannelDimension.LAST else tensor
    first, last = tensor.shape[0] in (1, 3, 4), tensor.shape[-1] in (1, 3, 4)
    # numpy images are channels-last by convention, tensors channels-first; the shape decides when only one fits.
    if last and (channels_last_by_default or not first):
        return tensor.permute(2, 0, 1)
    if first:
        return tensor
    raise ValueError(
        f"image {index} has shape {tuple(tensor.shape)}: no axis of 1, 3 or 4 channels at either end "
        "(pass input_data_format for other layouts)"
    )


def image_to_tensor(
    image,
    bits_stored: int | None = None,
    input_range: tuple[float, float] | None = None,
    do_convert_rgb: bool = True,
    input_data_format=None,
    index: int = 0,
) -> torch.Tensor:
    """One image -> float32 (C, H, W) in [0, 1]; C = 3 with `do_convert_rgb`, else the image's own channel count.

    Accepts PIL images (any mode; 16-bit modes keep their values), numpy arrays (channels-last by default) and torch
    tensors (channels-first by default), as (H, W) or with 1, 3 or 4 channels. Integer data follows
    `integer_image_to_unit_range`. Float data must lie in [0, 1], or in `input_range=(min, max)` when given.
    `do_convert_rgb` repeats a single channel three times and drops an alpha channel.
    """
    name = f"image {index}"
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL, without importing it for non-PIL users
        image = _pil_to_array(image)
        input_data_format = None  # arrays from PIL are channels-last whatever the caller says about the others
    if isinstance(image, np.ndarray):
        if image.dtype.byteorder not in ("=", "|"):
            image = image.astype(image.dtype.newbyteorder("="))
        if image.dtype == np.uint32 or image.dtype == np.uint64:  # no torch arithmetic for these: the values decide
            image = image.astype(np.int64)
        tensor = _channels_first(torch.from_numpy(np.array(image, copy=True, order="C")), input_data_format, True, index)
    elif torch.is_tensor(image):
        tensor = _channels_first(image.detach().cpu(), input_data_format, False, index)
    else:
        raise TypeError(f"unsupported image type {type(image).__name__} for {name}: give a PIL image, a numpy array or a tensor")
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"{name} is empty: its size is {tensor.shape[-2]}x{tensor.shape[-1]} (height x width)")
    if tensor.shape[0] not in (1, 3, 4):
        raise ValueError(f"{name} must be (H, W) or have 1, 3 or 4 channels; got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        if bits_stored is not None:
            raise ValueError(
                f"bits_stored={bits_stored} was given for {name}, whose data is {tensor.dtype}: bits_stored is for "
                "integer images"
            )
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = (0.0, 1.0) if input_range is None else (float(input_range[0]), float(input_range[1]))
        if not high > low:
            raise ValueError(f"input_range must be (min, max) with max > min, got {input_range}")
        found_low, found_high = tensor.min().item(), tensor.max().item()
        if found_low < low or found_high > high:
            hint = "; pass input_range=(min, max) to say what range the values use" if input_range is None else ""
            raise ValueError(f"{name} is a float image with values {found_low:g}..{found_high:g}, outside {low:g}..{high:g}{hint}")
        if input_range is not None:
            tensor = (tensor - low) / (high - low)
    else:
        if input_range is not None:
            raise ValueError(f"input_range is for float images; {name} is {tensor.dtype} (integer images follow bits_stored)")
        tensor = integer_image_to_unit_range(tensor, bits_stored, name)
    if do_convert_rgb:
        tensor = tensor[:3] if tensor.shape[0] != 1 else tensor.expand(3, -1, -1)
    return tensor


def image_size(image) -> tuple[int, int]:
    """(height, width) of a PIL image, a channels-last array or a channels-first tensor."""
    if hasattr(image, "size") and hasattr(image, "mode"):
        return image.size[1], image.size[0]
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.shape[-2]), int(image.shape[-1])


def _per_image(values, count: int, name: str, single: bool) -> list | None:
    """One entry per image, or an error naming `name` and both counts (a shorter list would drop images)."""
    if values is None:
        return None
    if single:
        return [values]
    if not isinstance(values, (list, tuple)) and not (torch.is_tensor(values) or isinstance(values, np.ndarray)):
        raise ValueError(f"{name} must be a list with one entry per image ({count}), got {type(values).__name__}")
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} images: give exactly one per image")
    return list(values)


def _check_target_sizes(target_sizes, batch_size: int) -> list[tuple[int, int]] | None:
    if target_sizes is None:
        return None
    sizes = target_sizes.tolist() if torch.is_tensor(target_sizes) or isinstance(target_sizes, np.ndarray) else list(target_sizes)
    if len(sizes) != batch_size:
        raise ValueError(f"target_sizes has {len(sizes)} entries for a batch of {batch_size}: give one (height, width) per image")
    checked = []
    for index, size in enumerate(sizes):
        if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
            raise ValueError(f"target_sizes[{index}] must be a (height, width) of positive integers, got {size}")
        checked.append((int(size[0]), int(size[1])))
    return checked


def _square_side(size, name: str = "size") -> int:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = {"height": int(size), "width": int(size)}
    if not isinstance(size, dict) or set(size) != {"height", "width"}:
        raise ValueError(f"{name} must be an int or a dict with 'height' and 'width', got {size!r}")
    if size["height"] != size["width"] or size["height"] <= 0 or size["height"] % 16:
        raise ValueError(f"{name} must be a square whose side is a positive multiple of 16, got {size}")
    return int(size["height"])


class M2DinoImageProcessor(BaseImageProcessor):
    r"""Images -> `pixel_values` for M2DINO, with their masks, boxes and landmarks; model outputs -> original pixels.

    Args:
        size (`int` or `dict`, *optional*, defaults to 224): side of the square every image is resized to
            (a multiple of 16).
        do_resize (`bool`, *optional*, defaults to `True`): resize to `size`; without it the images keep their
            size (they must then share one to be stacked, or use `return_tensors=None`).
        do_normalize (`bool`, *optional*, defaults to `True`): subtract `image_mean`, divide by `image_std`.
        image_mean, image_std (`list[float]`, *optional*, ImageNet's by default): one value per output channel.
        do_convert_rgb (`bool`, *optional*, defaults to `True`): grayscale becomes three equal channels and alpha is
            dropped; with `False` the images keep their channel count (then `image_mean` / `image_std` must match it).

    Every option can be overridden for one call (`processor(images, size=64, do_normalize=False)`); a keyword the
    processor does not know is an error.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = M2DinoImageProcessorKwargs
    _valid_processor_keys = [
        "images", "segmentation_maps", "masks", "boxes", "points", "bits_stored", "input_range", "do_resize", "size",
        "do_normalize", "image_mean", "image_std", "do_convert_rgb", "input_data_format", "return_tensors",
    ]

    def __init__(
        self,
        size: dict | int | None = None,
        do_resize: bool = True,
        do_normalize: bool = True,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_convert_rgb: bool = True,
        **kwargs,
    ):
        auto_map = kwargs.pop("auto_map", None)
        unknown = sorted(k for k in kwargs if k not in _BOOKKEEPING_KEYS)
        if unknown:
            raise TypeError(f"M2DinoImageProcessor got unknown option(s) {unknown}; its options: size, do_resize, "
                            "do_normalize, image_mean, image_std, do_convert_rgb")
        super().__init__()
        side = _square_side(size if size is not None else 224)
        self.size = {"height": side, "width": side}
        self.do_resize = do_resize
        self.do_normalize = do_normalize
        self.image_mean = self._as_channel_list(image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN, "image_mean")
        self.image_std = self._as_channel_list(image_std if image_std is not None else IMAGENET_DEFAULT_STD, "image_std")
        self.do_convert_rgb = do_convert_rgb
        if auto_map is not None:  # kept through a save/load round trip, so the reloaded processor saves the same map
            self.auto_map = auto_map

    @staticmethod
    def _as_channel_list(values, name: str) -> list[float]:
        values = [float(values)] * 3 if isinstance(values, (int, float)) else [float(v) for v in values]
        if name == "image_std" and any(v <= 0 for v in values):
            raise ValueError(f"image_std must be positive, got {values}")
        return values

    @classmethod
    def from_config(cls, config, **kwargs) -> "M2DinoImageProcessor":
        """The processor matching a model config (its image size and normalisation)."""
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return cls(size=size, image_mean=config.image_mean, image_std=config.image_std, **kwargs)

    def preprocess(
        self,
        images,
        segmentation_maps=None,
        masks=None,
        boxes=None,
        points=None,
        bits_stored: int | list[int | None] | None = None,
        input_range: tuple[float, float] | None = None,
        do_resize: bool | None = None,
        size: int | dict | None = None,
        do_normalize: bool | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Images (one, a list, or a (B, C, H, W) batch) -> `pixel_values` (B, C, S, S) and `original_sizes` (B, 2)
        as (height, width).

        Labels, one per image (each checked against its image):
        - `segmentation_maps` (the transformers name, returned as `labels`) or `masks` (returned as `masks`): (H, W)
          class indices -> (B, S, S) int64, nearest-neighbour resized.
        - `boxes`: (n, 4) x_min, y_min, x_max, y_max pixels inside the image -> a list of normalised (cx, cy, w, h).
        - `points`: (P, 2) x, y pixels inside the image -> (B, P, 2) normalised (x, y).

        `bits_stored` (one int, or one per image) is the bit depth of integer images (DICOM); `input_range` the
        (min, max) of float images that are not in [0, 1]. `return_tensors`: "pt" (default), "np", or None (a list
        per field, so images of different sizes need no stacking).
        """
        if kwargs:
            raise TypeError(
                f"M2DinoImageProcessor got unknown keyword argument(s) {sorted(kwargs)}; it accepts "
                f"{', '.join(k for k in self._valid_processor_keys if k != 'images')}"
            )
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if segmentation_maps is not None and masks is not None:
            raise ValueError("give segmentation_maps or masks, not both (they are the same labels under two names)")
        do_resize = self.do_resize if do_resize is None else do_resize
        side = _square_side(self.size if size is None else size)
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        image_mean = self._as_channel_list(self.image_mean if image_mean is None else image_mean, "image_mean")
        image_std = self._as_channel_list(self.image_std if image_std is None else image_std, "image_std")
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb

        batched = isinstance(images, (list, tuple)) or (
            (torch.is_tensor(images) or isinstance(images, np.ndarray)) and images.ndim == 4
        )
        images = list(images) if batched else [images]
        if not images:
            raise ValueError("no images given")
        count, single = len(images), not batched
        maps = _per_image(segmentation_maps if segmentation_maps is not None else masks,
                          count, "segmentation_maps" if segmentation_maps is not None else "masks", single)
        boxes = _per_image(boxes, count, "boxes", single)
        points = _per_image(points, count, "points", single)
        if isinstance(bits_stored, (list, tuple)):
            bits = _per_image(bits_stored, count, "bits_stored", False)
        else:
            bits = [bits_stored] * count

        pixel_values, sizes = [], []
        for index, (image, image_bits) in enumerate(zip(images, bits)):
            tensor = image_to_tensor(image, image_bits, input_range, do_convert_rgb, input_data_format, index)
            sizes.append(tuple(tensor.shape[-2:]))
            if do_resize and tuple(tensor.shape[-2:]) != (side, side):
                tensor = F.interpolate(tensor[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]
            if do_normalize:
                if len(image_mean) != tensor.shape[0] or len(image_std) != tensor.shape[0]:
                    raise ValueError(
                        f"image {index} has {tensor.shape[0]} channels but image_mean has {len(image_mean)} values and "
                        f"image_std {len(image_std)}"
                    )
                tensor = (tensor - torch.tensor(image_mean)[:, None, None]) / torch.tensor(image_std)[:, None, None]
            pixel_values.append(tensor)

        data = {"pixel_values": pixel_values, "original_sizes": [torch.tensor(s, dtype=torch.long) for s in sizes]}
        if maps is not None:
            key = "labels" if segmentation_maps is not None else "masks"
            data[key] = [self.resize_mask(m, s, i, side if do_resize else None) for i, (m, s) in enumerate(zip(maps, sizes))]
        if boxes is not None:
            data["boxes"] = [self.normalize_boxes(b, s, i) for i, (b, s) in enumerate(zip(boxes, sizes))]
        if points is not None:
            data["points"] = [self.normalize_points(p, s, i) for i, (p, s) in enumerate(zip(points, sizes))]
        return BatchFeature(data=self._collate(data, return_tensors))

    @staticmethod
    def _collate(data: dict, return_tensors: str | None) -> dict:
        """Per-image lists -> stacked batches ("pt", "np") or lists of numpy arrays (None); boxes stay a list (each
        image has its own number of boxes)."""
        out = {}
        for key, values in data.items():
            if return_tensors is not None and key != "boxes":
                shapes = {tuple(v.shape) for v in values}
                if len(shapes) > 1:
                    raise ValueError(
                        f"{key} of the images have different shapes {sorted(shapes)} and cannot be stacked; resize them "
                        "(do_resize=True) or pass return_tensors=None for one array per image"
                    )
                values = torch.stack(values)
            if return_tensors != "pt":
                values = values.numpy() if torch.is_tensor(values) else [v.numpy() for v in values]
            out[key] = values
        return out

    def resize_mask(self, mask, original_size, index: int = 0, side: int | None = -1) -> torch.Tensor:
        """A (H, W) class-index mask -> (side, side) int64, nearest-neighbour; `side=None` keeps its size.
        (The default, -1, means this processor's `size` when `do_resize` is on.)"""
        if side == -1:
            side = self.size["height"] if self.do_resize else None
        if hasattr(mask, "mode") and hasattr(mask, "convert"):
            mask = np.asarray(mask)
        mask = mask.detach().cpu() if torch.is_tensor(mask) else torch.from_numpy(np.array(mask, copy=True))
        if tuple(mask.shape) != tuple(original_size):
            raise ValueError(f"mask {index} has shape {tuple(mask.shape)}, its image is {tuple(original_size)} (height, width)")
        if mask.is_floating_point():
            if not torch.isfinite(mask).all() or (mask != mask.round()).any():
                raise ValueError(f"mask {index} holds non-integer values; a mask holds class indices")
        elif mask.dtype == torch.bool:
            mask = mask.to(torch.uint8)
        mask = mask.long()
        if side is None or tuple(mask.shape) == (side, side):
            return mask
        return F.interpolate(mask[None, None].float(), size=(side, side), mode="nearest-exact")[0, 0].long()

    @staticmethod
    def normalize_boxes(boxes, original_size, index: int = 0) -> torch.Tensor:
        """(n, 4) x_min, y_min, x_max, y_max pixels -> (n, 4) normalised (cx, cy, w, h); every box must lie inside
        the image (a box outside would otherwise be clamped to a wrong or empty one)."""
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
        if boxes.numel() % 4 or (boxes.dim() > 1 and boxes.shape[-1] != 4):
            raise ValueError(f"boxes of image {index} must be (n, 4) as x_min, y_min, x_max, y_max; got shape {tuple(boxes.shape)}")
        boxes = boxes.reshape(-1, 4)
        height, width = original_size
        for box in boxes.tolist():
            problem = box_problem(box, width, height)
            if problem is not None:
                raise ValueError(f"boxes of image {index}: {problem[1]}")
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return corners_to_center(boxes / scale)

    @staticmethod
    def normalize_points(points, original_size, index: int = 0) -> torch.Tensor:
        """(P, 2) x, y pixels -> (P, 2) normalised (x, y); every point must lie inside the image."""
        points = torch.as_tensor(np.asarray(points, dtype=np.float32))
        if points.dim() != 2 or points.shape[-1] != 2:
            raise ValueError(f"points of image {index} must be (P, 2) as (x, y), got shape {tuple(points.shape)}")
        height, width = original_size
        for x, y in points.tolist():
            if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
                raise ValueError(f"point [{x}, {y}] of image {index} lies outside the {width}x{height} image (width x height)")
        return points / torch.tensor([width, height], dtype=torch.float32)

    def post_process_semantic_segmentation(self, outputs, target_sizes=None, return_segmentation_scores: bool = False):
        """One (H, W) class-index mask per image, at each `target_sizes` (height, width) when given (else at the
        logits' size). With `return_segmentation_scores=True`, one `SemanticSegmentationPostProcessorOutput` per image
        with `segmentation` and `segmentation_scores` (num_labels, H, W): the logits at that size."""
        logits = outputs.logits
        sizes = _check_target_sizes(target_sizes, logits.shape[0])
        results = []
        for index in range(logits.shape[0]):
            scores = logits[index : index + 1].float()
            if sizes is not None:
                scores = F.interpolate(scores, size=sizes[index], mode="bilinear", align_corners=False)
            segmentation = scores[0].argmax(dim=0)
            if return_segmentation_scores:
                results.append(SemanticSegmentationPostProcessorOutput(
                    data={"segmentation": segmentation, "segmentation_scores": scores[0]}
                ))
            else:
                results.append(segmentation)
        return results

    def post_process_object_detection(self, outputs, threshold: float = 0.5, target_sizes=None, top_k: int | None = None):
        """Per image a dict of `scores`, `labels`, `boxes` (x_min, y_min, x_max, y_max; original pixels with
        `target_sizes`). `top_k` keeps the k best boxes whatever their score (the challenge's one box: 1)."""
        sizes = _check_target_sizes(target_sizes, outputs.logits.shape[0])
        return DetectionType.post_process(outputs.logits, outputs.pred_boxes, threshold, sizes, top_k)

    def post_process_keypoint_detection(self, outputs, target_sizes=None) -> list[dict]:
        """Per image a dict with `keypoints` (P, 2) as (x, y), in original pixels with `target_sizes`, and `scores`."""
        sizes = _check_target_sizes(target_sizes, outputs.keypoints.shape[0])
        return RegressionType.post_process(outputs.keypoints, outputs.heatmaps, sizes)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Written so that AutoImageProcessor with trust_remote_code finds the class without this package.
        self.auto_map = {"AutoImageProcessor": "image_processing_m2dino.M2DinoImageProcessor"}
        return super().save_pretrained(save_directory, *args, **kwargs)


__all__ = ["M2DinoImageProcessor", "M2DinoImageProcessorKwargs", "image_to_tensor", "image_size", "integer_image_to_unit_range"]
