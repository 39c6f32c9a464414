"""Image reading: PNG / JPEG / TIFF / BMP through Pillow, DICOM through pydicom.

Every image comes back as an 8-bit RGB :class:`PIL.Image.Image`; grayscale
(including MONOCHROME1 / MONOCHROME2 DICOM) is replicated to three channels.

>>> import tempfile, numpy as np
>>> from PIL import Image
>>> path = tempfile.mkdtemp() + "/gray.png"
>>> Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
>>> read_image(path).mode
'RGB'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medfuse.errors import ImageDecodeError

DICOM_SUFFIXES = {".dcm", ".dicom"}
BOMB_HINT = (
    "If the image is genuine, downscale it (e.g. to 4096 px on its longest side). The limit "
    "is Pillow's decompression-bomb guard: medfuse's config has no key for it; raise it in "
    "Python with `PIL.Image.MAX_IMAGE_PIXELS = n` (images over 2 x n pixels are refused), "
    "or with `medfuse serve --max-pixels N` when serving."
)


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True for a ``.dcm`` suffix or the ``DICM`` magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_to_uint8(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ImageDecodeError(str(path), "DICOM file has no pixel data")
    arr = ds.pixel_array
    if arr.ndim == 4 or (arr.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1):
        arr = arr[0]  # multi-frame: first frame
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if ds.get("SamplesPerPixel", 1) == 1:
        arr = apply_modality_lut(arr, ds)
        arr = apply_voi_lut(arr, ds) if "WindowCenter" in ds or "VOILUTSequence" in ds else arr
        arr = arr.astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        if photometric == "MONOCHROME1":
            arr = 1.0 - arr
        return np.round(arr * 255.0).astype(np.uint8)
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = np.round(255.0 * (arr - arr.min()) / max(float(np.ptp(arr)), 1e-12))
    return arr.astype(np.uint8)


def _bomb_reason(exc: Exception) -> str:
    """'the image has N pixels, more than the limit of M' from Pillow's bomb error."""
    numbers = re.findall(r"\((\d+) pixels\).*?limit of (\d+) pixels", str(exc))
    if numbers:
        size, limit = numbers[0]
        return (f"the image has {size} pixels, more than the pixel limit of {limit} "
                "(a possible decompression bomb)")
    return f"the image exceeds the pixel limit (a possible decompression bomb): {exc}"


def read_image(path: str | os.PathLike[str], draft: int | None = None) -> Image.Image:
    """Read any supported image file as 8-bit RGB.

    Parameters
    ----------
    path:
        Image file (PNG, JPEG, TIFF, BMP, or DICOM).
    draft:
        If given, JPEG decoding may use DCT scaling to a size near ``draft``
        pixels (much faster; used for validation and hashing).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ImageDecodeError
        If the file cannot be decoded; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: '{p}'")
    if p.stat().st_size == 0:
        raise ImageDecodeError(str(p), "the file is empty (0 bytes)",
                               "Copy or export the image again (an interrupted copy or "
                               "download leaves empty files), or fix its path.")
    try:
        if is_dicom(p):
            arr = _dicom_to_uint8(p)
            img = Image.fromarray(arr)
        else:
            img = Image.open(p)
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(str(p), _bomb_reason(exc), BOMB_HINT) from exc
    except UnidentifiedImageError as exc:
        with open(p, "rb") as fh:
            head = fh.read(16)
        raise ImageDecodeError(
            str(p), f"the content is not a PNG, JPEG, TIFF, BMP or DICOM image (it starts "
            f"with {head!r}: a text or HTML file, or another format with a wrong suffix?)"
        ) from exc
    except (OSError, ValueError, SyntaxError, AttributeError) as exc:
        what = "the file is cut off before the end of its image data: " \
            if "truncated" in str(exc) else ""
        raise ImageDecodeError(str(p), f"{what}{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # pydicom raises a zoo of types on corrupt files
        if type(exc).__name__ == "InvalidDicomError":
            raise ImageDecodeError(
                str(p), "not a valid DICOM file (the 128-byte preamble + 'DICM' header and "
                "the file meta information are missing or corrupt)"
            ) from exc
        raise ImageDecodeError(str(p), f"{type(exc).__name__}: {exc}") from exc
    if img.mode != "RGB":
        if img.mode in ("I;16", "I;16B", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
            img = Image.fromarray(np.round(arr * 255).astype(np.uint8))
        img = img.convert("RGB")
    return img
