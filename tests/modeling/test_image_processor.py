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
        (lambda p: p(np.zeros((8, 8), np.uint8), boxes=[[5, 1, 2, 4]]), r"boxes of image 0: x_max 2.0 <= x_min 5.0"),
        (lambda p: p(np.zeros((8, 8), np.uint8), points=[[1, 2, 3]]), r"\(P, 2\)"),
        (lambda p: p("image.png"), "unsupported image type"),
    ],
)
def test_bad_images_and_labels_are_named(processor, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(processor)


# --- HF conventions ----------------------------------------------------------------------------------------


def test_every_init_option_can_be_overridden_per_call(processor):
    image = np.random.default_rng(2).integers(0, 256, (40, 24), dtype=np.uint8)
    raw = torch.from_numpy(image).float() / 255
    assert processor(image, size=64)["pixel_values"].shape == (1, 3, 64, 64)
    assert processor(image, size={"height": 48, "width": 48})["pixel_values"].shape == (1, 3, 48, 48)
    kept = processor(image, do_resize=False, do_normalize=False)["pixel_values"]
    torch.testing.assert_close(kept, raw.expand(1, 3, -1, -1))
    custom = processor(image, do_resize=False, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])["pixel_values"]
    torch.testing.assert_close(custom, ((raw - 0.5) / 0.25).expand(1, 3, -1, -1))
    gray = processor(image, do_resize=False, do_convert_rgb=False, image_mean=[0.5], image_std=[0.5])["pixel_values"]
    torch.testing.assert_close(gray, ((raw - 0.5) / 0.5)[None, None])
    # the instance itself is unchanged by the overrides
    assert processor.size == {"height": 32, "width": 32} and processor.do_resize and processor.do_normalize
    assert processor(image)["pixel_values"].shape == (1, 3, 32, 32)


def test_unknown_keywords_are_an_error_naming_them(processor):
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(TypeError, match="sizee"):
        processor(image, sizee=64)
    with pytest.raises(TypeError, match="resample"):
        processor(image, resample=2)
    with pytest.raises(TypeError, match="image_meam"):
        m2dino.M2DinoImageProcessor(image_meam=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="return_tensors"):
        processor(image, return_tensors="tf")


def test_segmentation_maps_are_returned_as_labels(processor):
    image = np.zeros((48, 80), np.uint8)
    mask = np.zeros((48, 80), np.uint8)
    mask[12:36, 20:60] = 2
    out = processor(image, segmentation_maps=Image.fromarray(mask))
    assert "labels" in out and "masks" not in out
    torch.testing.assert_close(out["labels"], processor(image, masks=mask)["masks"])
    with pytest.raises(ValueError, match="segmentation_maps or masks"):
        processor(image, segmentation_maps=mask, masks=mask)


def test_return_tensors_np_and_none(processor):
    images = [np.random.default_rng(3).integers(0, 256, (20, 30), dtype=np.uint8), np.zeros((40, 40), np.uint8)]
    masks = [np.ones((20, 30), np.uint8), np.zeros((40, 40), np.uint8)]
    as_torch = processor(images, segmentation_maps=masks)
    as_numpy = processor(images, segmentation_maps=masks, return_tensors="np")
    assert isinstance(as_numpy["pixel_values"], np.ndarray) and isinstance(as_numpy["labels"], np.ndarray)
    np.testing.assert_allclose(as_numpy["pixel_values"], as_torch["pixel_values"].numpy())
    np.testing.assert_array_equal(as_numpy["original_sizes"], [[20, 30], [40, 40]])
    # without resizing, images of different sizes cannot be stacked: a list per field, or a clear error
    as_lists = processor(images, segmentation_maps=masks, do_resize=False, return_tensors=None)
    assert [a.shape for a in as_lists["pixel_values"]] == [(3, 20, 30), (3, 40, 40)]
    assert [a.shape for a in as_lists["labels"]] == [(20, 30), (40, 40)]
    with pytest.raises(ValueError, match=r"pixel_values .*different shapes.*return_tensors=None"):
        processor(images, do_resize=False)


def test_pil_16bit_modes_are_not_clipped(processor, tmp_path):
    array = np.random.default_rng(4).integers(0, 65536, (32, 32)).astype(np.uint16)
    expected = processor(array, do_normalize=False)["pixel_values"]
    torch.testing.assert_close(expected[0, 0], torch.from_numpy(array.astype(np.float32)) / 65535)
    Image.fromarray(array).save(tmp_path / "sixteen.png")
    reopened = Image.open(tmp_path / "sixteen.png")
    for image in (Image.fromarray(array), Image.fromarray(array).convert("I"), reopened):
        assert image.mode in ("I;16", "I"), image.mode
        torch.testing.assert_close(processor(image, do_normalize=False)["pixel_values"], expected)


def test_save_load_round_trip_keeps_auto_map(tmp_path):
    from transformers import AutoImageProcessor

    processor = m2dino.M2DinoImageProcessor(size=48, image_mean=[0.1, 0.2, 0.3], image_std=[0.3, 0.2, 0.1], do_normalize=False)
    processor.save_pretrained(tmp_path)
    first_json = (tmp_path / "preprocessor_config.json").read_text()
    for loaded in (m2dino.M2DinoImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is m2dino.M2DinoImageProcessor
        assert loaded.to_dict() == processor.to_dict()
        assert loaded.auto_map == {"AutoImageProcessor": "image_processing_m2dino.M2DinoImageProcessor"}
    loaded.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "preprocessor_config.json").read_text() == first_json


def test_post_process_semantic_segmentation_scores_and_target_sizes(processor):
    logits = torch.randn(2, 3, 8, 8)
    outputs = m2dino.modeling_m2dino.TASK_TYPE_IMPLEMENTATIONS["segmentation"].output_class(logits=logits)
    sizes = [(16, 12), (4, 4)]
    masks = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    scored = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes, return_segmentation_scores=True)
    for mask, result, size, image_logits in zip(masks, scored, sizes, logits):
        assert result.segmentation.shape == size and torch.equal(result.segmentation, mask)
        upsampled = torch.nn.functional.interpolate(image_logits[None], size=size, mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(result.segmentation_scores, upsampled)
        assert torch.equal(mask, upsampled.argmax(0))
    with pytest.raises(ValueError, match="target_sizes has 1 entries for a batch of 2"):
        processor.post_process_semantic_segmentation(outputs, target_sizes=sizes[:1])


# --- no silent wrong result ---------------------------------------------------------------------------------


def test_integer_images_follow_one_rule():
    config = tiny_config()
    processor = m2dino.M2DinoImageProcessor.from_config(config)
    wide = torch.randint(0, 65536, (3, 32, 32), dtype=torch.int32)  # e.g. PIL mode "I" of a 16-bit PNG
    twelve_bit = torch.randint(0, 4096, (3, 32, 32), dtype=torch.int32)
    for image, bits, divisor in ((wide, None, 65535.0), (twelve_bit, 12, 4095.0), (wide.to(torch.uint8), None, 255.0)):
        from_processor = processor(image, bits_stored=bits)["pixel_values"]
        mean, std = torch.tensor(config.image_mean)[:, None, None], torch.tensor(config.image_std)[:, None, None]
        torch.testing.assert_close(from_processor[0], (image.float() / divisor - mean) / std)
    # values the rule cannot represent are refused, never clipped or divided by another range
    too_wide = torch.full((3, 32, 32), 70000, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"70000.*outside 0..65535.*bits_stored"):
        processor(too_wide)
    with pytest.raises(ValueError, match=r"image 0 has integer values \d+..4096, outside 0..4095 \(bits_stored=12\)"):
        processor(torch.cat([twelve_bit, torch.full((3, 1, 32), 4096, dtype=torch.int32)], 1), bits_stored=12)
    with pytest.raises(ValueError, match=r"integer values -3..-3, outside 0..65535"):
        processor(torch.full((32, 32), -3, dtype=torch.int16))


def test_float_images_outside_unit_range_need_their_range_stated(processor):
    image = np.random.default_rng(5).integers(0, 256, (16, 16), dtype=np.uint8)
    as_float = image.astype(np.float32)
    with pytest.raises(ValueError, match=r"image 0 is a float image with values .* outside 0..1; pass input_range"):
        processor(as_float)
    torch.testing.assert_close(processor(as_float, input_range=(0, 255))["pixel_values"], processor(image)["pixel_values"])
    with pytest.raises(ValueError, match=r"outside 0..100"):
        processor(as_float, input_range=(0, 100))
    with pytest.raises(ValueError, match="input_range is for float images"):
        processor(image, input_range=(0, 255))
    with pytest.raises(ValueError, match="bits_stored is for integer images"):
        processor(as_float / 255, bits_stored=8)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"bits_stored": [12]}, "bits_stored has 1 entries for 3 images"),
        ({"masks": [np.zeros((8, 8), np.uint8)]}, "masks has 1 entries for 3 images"),
        ({"segmentation_maps": [np.zeros((8, 8), np.uint8)] * 4}, "segmentation_maps has 4 entries for 3 images"),
        ({"boxes": [[[1, 1, 4, 4]]] * 2}, "boxes has 2 entries for 3 images"),
        ({"points": [[[1, 1]]]}, "points has 1 entries for 3 images"),
        ({"masks": np.zeros((8, 8), np.uint8)}, "masks has 8 entries for 3 images"),
    ],
)
def test_per_image_lists_of_the_wrong_length_are_refused(processor, arguments, message):
    with pytest.raises(ValueError, match=message):
        processor([np.zeros((8, 8), np.uint8)] * 3, **arguments)


def test_labels_that_do_not_match_their_images_are_refused(processor):
    images = [np.zeros((8, 8), np.uint8), np.zeros((10, 6), np.uint8)]
    with pytest.raises(ValueError, match=r"mask 1 has shape \(8, 8\), its image is \(10, 6\)"):
        processor(images, masks=[np.zeros((8, 8)), np.zeros((8, 8))])
    with pytest.raises(ValueError, match="mask 0 holds non-integer values"):
        processor(images[0], masks=np.full((8, 8), 0.5))
    # a box outside its image is an error, not a box clamped to a wrong or empty one
    with pytest.raises(ValueError, match=r"boxes of image 1: box \[2.0, 2.0, 8.0, 9.0\] lies outside the 6x10 image"):
        processor(images, boxes=[[[1, 1, 4, 4]], [[2, 2, 8, 9]]])
    with pytest.raises(ValueError, match=r"boxes of image 0: box .* lies outside the 8x8 image"):
        processor(images[0], boxes=[[20, 20, 30, 30]])
    with pytest.raises(ValueError, match=r"point \[9.0, 1.0\] of image 0 lies outside the 8x8 image"):
        processor(images[0], points=[[9, 1]])
    edge = processor(images[0], boxes=[[0, 0, 8, 8]])["boxes"][0]  # a box touching the borders is inside
    torch.testing.assert_close(edge, torch.tensor([[0.5, 0.5, 1.0, 1.0]]))


@pytest.mark.parametrize("shape", [(0, 0), (0, 8), (8, 0, 3)])
def test_empty_images_are_refused(processor, shape):
    with pytest.raises(ValueError, match=r"image 1 is empty: its size is \d+x\d+"):
        processor([np.zeros((8, 8), np.uint8), np.zeros(shape, np.uint8)])


def test_target_sizes_of_the_wrong_length_are_refused(processor):
    kinds = m2dino.modeling_m2dino.TASK_TYPE_IMPLEMENTATIONS
    detection = kinds["detection"].output_class(logits=torch.zeros(2, 1, 2), pred_boxes=torch.full((2, 1, 4), 0.5))
    keypoints = kinds["regression"].output_class(keypoints=torch.rand(2, 3, 2), heatmaps=torch.zeros(2, 3, 4, 4))
    segmentation = kinds["segmentation"].output_class(logits=torch.zeros(2, 3, 4, 4))
    for call in (
        lambda sizes: processor.post_process_object_detection(detection, target_sizes=sizes),
        lambda sizes: processor.post_process_keypoint_detection(keypoints, target_sizes=sizes),
        lambda sizes: processor.post_process_semantic_segmentation(segmentation, target_sizes=sizes),
    ):
        with pytest.raises(ValueError, match="target_sizes has 3 entries for a batch of 2"):
            call([(8, 8)] * 3)
        with pytest.raises(ValueError, match="target_sizes has 1 entries for a batch of 2"):
            call(torch.tensor([[8, 8]]))
        with pytest.raises(ValueError, match=r"target_sizes\[1\] must be a \(height, width\) of positive integers"):
            call([(8, 8), (0, 8)])
