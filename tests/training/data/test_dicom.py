"""read_dicom on files the test builds with pydicom: each photometric, 8 and 16 bits, single and multi-frame."""

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from fixtures import write_dicom  # noqa: E402
from m2dino_training.data.dicom import (  # noqa: E402
    DicomFrame,
    is_dicom_file,
    read_dicom,
    read_dicom_header,
    select_frames,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_monochrome2_16bit_12_stored(tmp_path, rng):
    pixels = rng.integers(0, 4096, size=(20, 30), dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, "MONOCHROME2", bits_stored=12)
    (frame,) = read_dicom(path)
    array, bits = frame  # unpacks like a tuple
    assert isinstance(frame, DicomFrame)
    assert bits == 12 and array.dtype == np.uint16 and array.shape == (20, 30)
    np.testing.assert_array_equal(array, pixels)
    header = read_dicom_header(path)
    assert (header.rows, header.columns, header.num_frames, header.bits_stored, header.channels) == (20, 30, 1, 12, 1)


def test_monochrome1_8bit_is_inverted(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(16, 12), dtype=np.uint8)
    path = write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1")
    (frame,) = read_dicom(path)
    assert frame.bits_stored == 8 and frame.array.dtype == np.uint8
    np.testing.assert_array_equal(frame.array, 255 - pixels)


def test_rgb_8bit(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", pixels, "RGB")
    (frame,) = read_dicom(path)
    assert frame.array.shape == (10, 14, 3) and frame.array.dtype == np.uint8 and frame.bits_stored == 8
    np.testing.assert_array_equal(frame.array, pixels)


def _rgb_to_ybr(rgb):
    from pydicom.pixels import convert_color_space

    return convert_color_space(rgb, "RGB", "YBR_FULL")


def test_ybr_full_becomes_rgb(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "ybr.dcm", _rgb_to_ybr(rgb), "YBR_FULL")
    (frame,) = read_dicom(path)
    assert frame.array.shape == (12, 16, 3) and frame.array.dtype == np.uint8
    # A round trip through 8-bit YCbCr is exact up to rounding.
    assert np.abs(frame.array.astype(int) - rgb.astype(int)).max() <= 2


def test_ybr_full_422_becomes_rgb(tmp_path, rng):
    # Pixel pairs share their colour, so 4:2:2 chroma subsampling loses nothing.
    rgb = np.repeat(rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8), 2, axis=1)
    path = write_dicom(tmp_path / "ybr422.dcm", _rgb_to_ybr(rgb), "YBR_FULL_422", ybr422=True)
    (frame,) = read_dicom(path)
    assert frame.array.shape == (8, 12, 3)
    assert np.abs(frame.array.astype(int) - rgb.astype(int)).max() <= 2


def test_palette_color_applies_lut(tmp_path, rng):
    lut = rng.integers(0, 65536, size=(256, 3), dtype=np.uint16)
    indices = rng.integers(0, 256, size=(9, 11), dtype=np.uint8)
    path = write_dicom(tmp_path / "pal.dcm", indices, "PALETTE COLOR", palette=lut)
    (frame,) = read_dicom(path)
    assert frame.bits_stored == 16 and frame.array.dtype == np.uint16 and frame.array.shape == (9, 11, 3)
    np.testing.assert_array_equal(frame.array, lut[indices])


def test_multiframe_selection(tmp_path, rng):
    cine = rng.integers(0, 256, size=(3, 8, 10), dtype=np.uint8)
    path = write_dicom(tmp_path / "cine.dcm", cine, "MONOCHROME2")
    assert read_dicom_header(path).num_frames == 3
    frames = read_dicom(path)
    assert len(frames) == 3
    for got, want in zip(frames, cine):
        np.testing.assert_array_equal(got.array, want)
    np.testing.assert_array_equal(read_dicom(path, frames="middle")[0].array, cine[1])
    np.testing.assert_array_equal(read_dicom(path, frames=2)[0].array, cine[2])
    np.testing.assert_array_equal(read_dicom(path, frames=-1)[0].array, cine[2])
    picked = read_dicom(path, frames=[2, 0])
    np.testing.assert_array_equal(picked[0].array, cine[2])
    np.testing.assert_array_equal(picked[1].array, cine[0])
    with pytest.raises(ValueError, match="frame 3 out of range: the file has 3 frame"):
        read_dicom(path, frames=3)


def test_multiframe_rgb(tmp_path, rng):
    cine = rng.integers(0, 256, size=(3, 6, 5, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "cine_rgb.dcm", cine, "RGB")
    frame = read_dicom(path, frames="middle")[0]
    np.testing.assert_array_equal(frame.array, cine[1])


def test_select_frames_and_detection(tmp_path):
    assert select_frames(1, "middle") == [0]
    assert select_frames(4, None) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="'first'"):
        select_frames(4, "first")
    # Detected by content as well as by extension.
    pixels = np.zeros((4, 4), dtype=np.uint8)
    path = write_dicom(tmp_path / "no_extension", pixels, "MONOCHROME2")
    assert is_dicom_file(path)
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG not really")
    assert not is_dicom_file(png)


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"nothing dicom here")
    with pytest.raises(ValueError, match="bad.dcm: not a readable DICOM file"):
        read_dicom(bad)
