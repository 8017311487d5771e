"""transformers pipelines that keep an image's bit depth.

transformers' image pipelines open every input with `load_image`, which accepts only paths, URLs and PIL images and
converts them to 8-bit RGB: a numpy or torch image is refused by the segmentation and detection pipelines, and a
16-bit PIL image or PNG (DICOM-derived ultrasound often is) is clipped to 255 before the image processor sees it.
These subclasses hand arrays, tensors and PIL images of any mode to `M2DinoImageProcessor` unchanged, so its one
rule for integer images applies; everything else (URLs, base64) still goes through `load_image`. Use them with
`pipeline(task, model=folder, pipeline_class=...)`:

    from transformers import pipeline
    from modeling_m2dino import M2DinoImageSegmentationPipeline

    segment = pipeline("image-segmentation", model="m2dino", pipeline_class=M2DinoImageSegmentationPipeline)
    segment(uint16_array, subtask="semantic")
"""

import os

import numpy as np
import torch
from transformers.image_utils import load_image
from transformers.pipelines import ImageClassificationPipeline, ImageSegmentationPipeline, ObjectDetectionPipeline


def load_image_keeping_bit_depth(image, timeout: float | None = None):
    """Arrays, tensors and PIL images as they are (EXIF orientation applied to PIL images); a local path opened
    with PIL in its own mode; anything else (URL, base64) through transformers' `load_image` (8-bit RGB)."""
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return image
    from PIL import Image, ImageOps

    if isinstance(image, str) and os.path.isfile(image):
        image = Image.open(image)
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image)
    return load_image(image, timeout=timeout)


def _processed(pipeline, image, timeout):
    """The image processor's output for one input and its (height, width) as the processor read it."""
    image = load_image_keeping_bit_depth(image, timeout)
    inputs = pipeline.image_processor(images=[image], return_tensors="pt").to(pipeline.dtype)
    return inputs, tuple(int(s) for s in inputs["original_sizes"][0])


class M2DinoImageClassificationPipeline(ImageClassificationPipeline):
    """`image-classification` for numpy, torch and PIL images of any bit depth."""

    def preprocess(self, image, timeout=None):
        return _processed(self, image, timeout)[0]


class M2DinoImageSegmentationPipeline(ImageSegmentationPipeline):
    """`image-segmentation` for numpy, torch and PIL images of any bit depth (masks at the input's size)."""

    def preprocess(self, image, subtask=None, timeout=None):
        inputs, size = _processed(self, image, timeout)
        inputs["target_size"] = [size]
        return inputs


class M2DinoObjectDetectionPipeline(ObjectDetectionPipeline):
    """`object-detection` for numpy, torch and PIL images of any bit depth (boxes in the input's pixels)."""

    def preprocess(self, image, timeout=None):
        inputs, size = _processed(self, image, timeout)
        inputs["target_size"] = torch.IntTensor([list(size)])
        return inputs


__all__ = [
    "M2DinoImageClassificationPipeline",
    "M2DinoImageSegmentationPipeline",
    "M2DinoObjectDetectionPipeline",
    "load_image_keeping_bit_depth",
]
