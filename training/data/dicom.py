"""DICOM reading: one file -> frames the image processor understands.

Ultrasound DICOM comes as single images or multi-frame cine loops, in grayscale (MONOCHROME1/2), RGB,
YCbCr (YBR_FULL, YBR_FULL_422) or PALETTE COLOR, with 8 or up to 16 stored bits. `read_dicom` turns any of
them into uint8 / uint16 numpy arrays of shape (H, W) or (H, W, 3) plus the number of significant bits, so
the processor can scale by ``2**bits_stored - 1`` instead of guessing from the dtype (a 12-bit image in a
uint16 array would otherwise look almost black).

pydicom is an optional dependency (``pip install m2dino[dicom]``); it is imported only when a DICOM file
is actually read.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import numpy as np

DICOM_EXTENSIONS = (".dcm", ".dicom")
SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")


class DicomFrame(NamedTuple):
    """One decoded frame. Unpacks as ``array, bits_stored = frame``."""

    array: np.ndarray  # uint8 or uint16, (H, W) or (H, W, 3) RGB
    bits_stored: int  # significant bits of `array`: the processor divides by 2**bits_stored - 1


class DicomHeader(NamedTuple):
    """What a loader needs to know about a DICOM file without decoding its pixels."""

    rows: int
    columns: int
    num_frames: int
    photometric: str
    bits_stored: int  # bits of the arrays `read_dicom` will return (the LUT depth for PALETTE COLOR)
    channels: int  # 1 or 3 in the returned arrays


def _pydicom():
    try:
        import pydicom
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading DICOM files needs pydicom, an optional dependency: pip install 'm2dino[dicom]' "
            "(or pip install pydicom)"
        ) from error
    return pydicom


def is_dicom_file(path) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file carrying the DICOM preamble magic (``DICM`` at 128)."""
    if str(path).lower().endswith(DICOM_EXTENSIONS):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _output_bits(ds) -> int:
    """Significant bits of the arrays we return for this dataset."""
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        # The LUT descriptor's third value is the bit depth of the LUT entries (8 or 16).
        descriptor = ds.RedPaletteColorLookupTableDescriptor
        return int(descriptor[2])
    return int(ds.BitsStored)


def _check_supported(ds, path) -> None:
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise ValueError(
            f"{path}: unsupported PhotometricInterpretation {photometric!r}; supported: {', '.join(SUPPORTED_PHOTOMETRIC)}"
        )
    bits = _output_bits(ds)
    if not 1 <= bits <= 16:
        raise ValueError(f"{path}: {bits} bits per sample are not supported (1 to 16 are)")


def read_dicom_header(path) -> DicomHeader:
    """Read the image attributes of a DICOM file (no pixel data). Raises ValueError if it cannot be used."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pydicom raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable DICOM file ({error})") from error
    for keyword in ("Rows", "Columns", "BitsStored", "PhotometricInterpretation"):
        if keyword not in ds:
            raise ValueError(f"{path}: DICOM file has no {keyword} attribute (not an image?)")
    _check_supported(ds, path)
    photometric = str(ds.PhotometricInterpretation)
    channels = 1 if photometric.startswith("MONOCHROME") else 3
    return DicomHeader(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        num_frames=int(ds.get("NumberOfFrames", 1) or 1),
        photometric=photometric,
        bits_stored=_output_bits(ds),
        channels=channels,
    )


def select_frames(num_frames: int, frames=None) -> list[int]:
    """Frame indices for a `frames` argument: None (all), "middle", an int or a list of ints (negatives count
    from the end)."""
    if frames is None:
        return list(range(num_frames))
    if isinstance(frames, str):
        if frames != "middle":
            raise ValueError(f"frames must be None, 'middle', an int or a list of ints, got {frames!r}")
        return [num_frames // 2]
    wanted = [frames] if isinstance(frames, (int, np.integer)) else list(frames)
    indices = []
    for index in wanted:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise ValueError(f"frame indices must be ints, got {index!r}")
        if not -num_frames <= index < num_frames:
            raise ValueError(f"frame {index} out of range: the file has {num_frames} frame(s)")
        indices.append(int(index) % num_frames)
    return indices


def _to_output(arr: np.ndarray, ds, bits: int) -> np.ndarray:
    """Photometric conversion and dtype for one frame (already RGB if the file was YBR)."""
    photometric = ds.PhotometricInterpretation
    if int(ds.get("PixelRepresentation", 0)) == 1 and photometric != "PALETTE COLOR":
        # Signed samples (rare in ultrasound): shift into 0..2**bits-1 so the processor's scaling holds.
        arr = arr.astype(np.int32) + (1 << (bits - 1))
    if photometric == "PALETTE COLOR":
        arr = _apply_palette(arr, ds)
    elif photometric == "MONOCHROME1":
        # MONOCHROME1 shows low values as white; invert so every grayscale image reads bright = high.
        arr = ((1 << bits) - 1) - arr.astype(np.int32)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


def _apply_palette(arr, ds):
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_color_lut
    return apply_color_lut(arr, ds)


def _ybr_to_rgb(arr, photometric):
    try:
        from pydicom.pixels import convert_color_space
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space
    return convert_color_space(arr, photometric, "RGB")


def _decode(path, ds, indices: Sequence[int], num_frames: int) -> list[np.ndarray]:
    """Decoded frames (YBR already converted to RGB), one array per index."""
    pydicom = _pydicom()
    try:
        from pydicom.pixels import pixel_array  # pydicom >= 3
    except ImportError:
        pixel_array = None
    if pixel_array is not None:
        # pydicom 3 converts YBR to RGB itself (and knows when a JPEG decoder already did); with a path and
        # an index it decodes just that frame, so picking the middle of a long cine stays cheap.
        if len(indices) == num_frames:
            data = pixel_array(os.fspath(path))
            return [data] if num_frames == 1 else [data[i] for i in indices]
        return [pixel_array(os.fspath(path), index=i) for i in indices]
    full = pydicom.dcmread(path)
    data = full.pixel_array
    frames = [data] if num_frames == 1 else [data[i] for i in indices]
    if ds.PhotometricInterpretation.startswith("YBR_FULL"):
        frames = [_ybr_to_rgb(frame, ds.PhotometricInterpretation) for frame in frames]
    return frames


def read_dicom(path, frames=None) -> list[DicomFrame]:
    """Decode a DICOM file into a list of `DicomFrame(array, bits_stored)`.

    `frames`: None for every frame, "middle" for the middle frame of a cine (the first of a single image),
    an int or a list of ints (0-based, negatives from the end). Output arrays are uint8 when the data has
    at most 8 significant bits, else uint16; shape (H, W) for MONOCHROME1/2 (MONOCHROME1 inverted so that
    high = bright) and (H, W, 3) RGB for RGB, YBR_FULL/YBR_FULL_422 (converted) and PALETTE COLOR (LUT
    applied; `bits_stored` is then the LUT's entry depth). Stored values are returned as they are: no
    rescale slope/intercept or windowing is applied.
    """
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: not a readable DICOM file ({error})") from error
    _check_supported(ds, path)
    num_frames = int(ds.get("NumberOfFrames", 1) or 1)
    indices = select_frames(num_frames, frames)
    bits = _output_bits(ds)
    decoded = _decode(path, ds, indices, num_frames)
    return [DicomFrame(_to_output(frame, ds, bits), bits) for frame in decoded]
