import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

import modeling_m2dino as m2dino

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def unnormalize(pixel_values):
    return pixel_values * STD + MEAN


@pytest.fixture
def processor():
    return m2dino.M2DinoImageProcessor(size=32)


def test_pil_numpy_torch_grayscale_rgb_rgba_agree(processor):
    gray = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    inputs = [
        Image.fromarray(gray), Image.fromarray(np.stack([gray] * 3, -1)), Image.fromarray(np.stack([gray] * 3 + [gray], -1)),
        gray, np.stack([gray] * 3, -1), gray[..., None], torch.from_numpy(gray), torch.from_numpy(gray)[None].repeat(3, 1, 1),
        gray.astype(np.float32) / 255.0,
    ]
    batch = processor(inputs)["pixel_values"]
    assert batch.shape == (len(inputs), 3, 32, 32)
    for values in batch[1:]:
        torch.testing.assert_close(values, batch[0])
    torch.testing.assert_close(unnormalize(batch[0])[0], torch.from_numpy(gray).float() / 255)


def test_uint16_in_any_byte_order_and_bits_stored(processor):
    image = np.random.default_rng(1).integers(0, 4096, (32, 32)).astype(np.uint16)
    little, big = image.astype("<u2"), image.astype(">u2")
    out = processor([little, big, Image.fromarray(image)])["pixel_values"]
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], out[2])
    torch.testing.assert_close(unnormalize(out[0])[0], torch.from_numpy(image.astype(np.float32)) / 65535)
    dicom_like = processor(image, bits_stored=12)["pixel_values"][0]
    torch.testing.assert_close(unnormalize(dicom_like)[0], torch.from_numpy(image.astype(np.float32)) / 4095)


def test_masks_boxes_points_follow_the_resize(processor):
    height, width = 48, 80  # non-square original: x and y scale differently
    mask = np.zeros((height, width), np.uint8)
    mask[12:36, 20:60] = 2
    out = processor(np.zeros((height, width), np.uint8), masks=mask, boxes=[[20, 12, 60, 36]], points=[[20, 12], [60, 36]])
    assert out["original_sizes"].tolist() == [[height, width]]
    resized = out["masks"][0]
    assert resized.dtype == torch.long and set(resized.unique().tolist()) == {0, 2}
    rows, cols = torch.nonzero(resized == 2, as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (8, 23, 8, 23)
    torch.testing.assert_close(out["boxes"][0], torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    torch.testing.assert_close(out["points"][0], torch.tensor([[0.25, 0.25], [0.75, 0.75]]))


def test_post_processing_maps_back_to_original_pixels(processor):
    config = tiny_config()
    model = m2dino.M2DinoForMultiTask(config).eval()
    images = [np.zeros((48, 80), np.uint8), np.zeros((40, 40), np.uint8)]
    pixel_values = processor(images)["pixel_values"]
    sizes = [(48, 80), (40, 40)]
    out = model(pixel_values, tasks="cervix_multi").task_outputs["cervix_multi"]
    masks = processor.post_process_semantic_segmentation(out, target_sizes=sizes)
    assert [tuple(m.shape) for m in masks] == sizes
    detection = m2dino.modeling_m2dino.TASK_TYPE_IMPLEMENTATIONS["detection"].output_class(
        logits=torch.tensor([[[4.0, 0.0]], [[4.0, 0.0]]]), pred_boxes=torch.tensor([[[0.5, 0.5, 0.5, 0.5]], [[0.25, 0.5, 0.5, 1.0]]])
    )
    results = processor.post_process_object_detection(detection, threshold=0.5, target_sizes=sizes)
    torch.testing.assert_close(results[0]["boxes"], torch.tensor([[20.0, 12.0, 60.0, 36.0]]))
    torch.testing.assert_close(results[1]["boxes"], torch.tensor([[0.0, 0.0, 20.0, 40.0]]))
    assert results[0]["labels"].tolist() == [0] and results[0]["scores"][0] > 0.9
    keypoints = m2dino.modeling_m2dino.TASK_TYPE_IMPLEMENTATIONS["regression"].output_class(
        keypoints=torch.tensor([[[0.25, 0.5]], [[1.0, 0.0]]]), heatmaps=torch.zeros(2, 1, 4, 4)
    )
    points = processor.post_process_keypoint_detection(keypoints, target_sizes=sizes)
    torch.testing.assert_close(points[0]["keypoints"], torch.tensor([[20.0, 24.0]]))
    torch.testing.assert_close(points[1]["keypoints"], torch.tensor([[40.0, 0.0]]))


def test_processor_round_trips_and_matches_config(tmp_path):
    config = tiny_config(image_size=48)
    processor = m2dino.M2DinoImageProcessor.from_config(config)
    processor.save_pretrained(tmp_path)
    from transformers import AutoImageProcessor

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is m2dino.M2DinoImageProcessor and loaded.size == {"height": 48, "width": 48}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: p(np.zeros((6, 6, 5), np.uint8)), "1, 3 or 4 channels"),
        (lambda p: p(np.full((4, 4), np.nan, np.float32)), "NaN"),
        (lambda p: p(np.zeros((8, 8), np.uint8), masks=np.zeros((4, 4))), "mask 0 has shape"),
        (lambda p: p(np.zeros((8, 8), np.uint8), boxes=[[5, 1, 2, 4]]), "x_max > x_min"),
        (lambda p: p(np.zeros((8, 8), np.uint8), points=[[1, 2, 3]]), r"\(P, 2\)"),
        (lambda p: p("image.png"), "unsupported image type"),
    ],
)
def test_bad_images_and_labels_are_named(processor, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(processor)
