"""Reading an image file whole: a file that is missing, empty, cut short or not an image is
an error that names the file, never a silently grey picture.

OpenCV's ``imread`` decodes a JPEG that ends early without an error (libjpeg fills the
missing rows with grey and only prints a warning), so completeness is checked on the bytes,
before decoding:

* JPEG: the file ends with the end-of-image marker ``FF D9``, possibly followed by padding
  bytes (``00``, ``FF``, whitespace). A file with other data after its image (a camera's
  trailer, an appended video) is accepted when its marker segments, walked from the start,
  reach an end-of-image marker.
* PNG: its chunks, walked from the signature, are complete up to an ``IEND`` chunk.

The format is recognised by the file's first bytes, not its name. Other formats (BMP, TIFF,
WebP, ...) are left to OpenCV's decoder.
"""

from __future__ import annotations

import re
from typing import Any

import cv2
import numpy as np

__all__ = ["ImageFileError", "incomplete_image_reason", "load_image_file"]

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC of "IEND"
_PADDING = b"\x00\xff \t\r\n"
# Inside entropy-coded data a 0xFF byte is followed by 00 (stuffing) or D0-D7 (restart
# markers); anything else after it begins the next marker segment.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")

# What to do about each kind of bad file (ImageFileError.kind).
IMAGE_FILE_ADVICE = {
    "empty": "Copy or download the file again.",
    "truncated": "The file was cut short (an interrupted download or copy): fetch it again.",
    "undecodable": "Replace it with the right JPEG or PNG file (an error page or another "
    "kind of file may have been saved under this name).",
    "unsupported": "Convert it to an 8-bit JPEG or PNG.",
    "unreadable": "Check that it is a file and that its permissions let you read it.",
}


class ImageFileError(ValueError):
    """An image file that exists but cannot be used.

    Attributes:
        file_name, image_id: the file and its dataset dict's ``image_id`` (None if unknown).
        kind: "empty", "truncated", "undecodable", "unsupported" (pixel type or channels)
            or "unreadable" (an OS error other than a missing file).
        reason: what is wrong, as a predicate of the file ("is empty (0 bytes)").
    """

    def __init__(self, file_name: str, image_id: Any, kind: str, reason: str):
        self.file_name, self.image_id, self.kind, self.reason = file_name, image_id, kind, reason
        super().__init__(
            f"Image {file_name} (image_id {image_id!r}) {reason}. {IMAGE_FILE_ADVICE[kind]}"
        )

    def __reduce__(self):  # keep the attributes when sent between processes
        return type(self), (self.file_name, self.image_id, self.kind, self.reason)


def _jpeg_reaches_end(data: bytes) -> bool:
    """Walk the marker segments after SOI; True if an end-of-image marker is reached."""
    pos, size = 2, len(data)
    while pos + 2 <= size:
        if data[pos] != 0xFF:  # stray bytes between segments: decoders skip to the next 0xFF
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return False
            continue
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):  # markers without a length
            pos += 2
            continue
        if pos + 4 > size:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                return False
            pos = found.start()
    return False


def _png_problem(data: bytes) -> str | None:
    """Walk the chunks after the signature; why the file stops early, or None."""
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length  # length, type, data, CRC
        if end > size:
            return (
                f"is truncated: its PNG chunk {chunk_type.decode('latin-1')!r} needs "
                f"{end:,} bytes, but the file ends after {size:,}"
            )
        if chunk_type == b"IEND":
            return None
        pos = end
    return f"is truncated: the PNG ends after {size:,} bytes, before its IEND chunk"


def incomplete_image_reason(data: bytes) -> str | None:
    """Why the encoded image ``data`` is incomplete, or None.

    Returns a predicate of the file ("is truncated: ...") for a JPEG or PNG that ends early;
    None for a complete one and for any other format (left to the decoder).
    """
    if data.startswith(_JPEG_START):
        # The usual file ends with its EOI marker; the walk handles trailing data.
        if data.rstrip(_PADDING).endswith(_JPEG_END) or _jpeg_reaches_end(data):
            return None
        return (
            f"is truncated: the JPEG ends after {len(data):,} bytes without its end-of-image "
            "marker (FF D9)"
        )
    if data.startswith(_PNG_SIGNATURE):
        if data.rstrip(b"\x00").endswith(_PNG_IEND_CHUNK):
            return None
        return _png_problem(data)
    return None


def load_image_file(file_name: str, image_id: Any = None) -> np.ndarray:
    """The pixels of ``file_name`` as stored: ``cv2.IMREAD_UNCHANGED`` (any depth and
    channel count, EXIF orientation not applied), after checking the file is complete.

    Args:
        file_name: a local image file.
        image_id: the dataset dict's ``image_id``, only for error messages.

    Returns:
        ``np.ndarray [H, W]`` or ``[H, W, C]`` of the file's pixel type.

    Raises:
        FileNotFoundError: no file of that name.
        ImageFileError: the file is empty, truncated, not decodable or cannot be read.
    """
    where = f"{file_name} (image_id {image_id!r})"
    try:
        with open(file_name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Image file not found: {where}. Check the dataset's path (and $DETKIT_DATASETS), "
            "or that the download is complete."
        ) from None
    except OSError as e:
        raise ImageFileError(
            file_name, image_id, "unreadable", f"cannot be read ({e.strerror or e})"
        ) from None
    if not data:
        raise ImageFileError(file_name, image_id, "empty", "is empty (0 bytes)")
    reason = incomplete_image_reason(data)
    if reason is not None:
        raise ImageFileError(file_name, image_id, "truncated", reason)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # some malformed headers raise instead of returning None
        image = None
    if image is None:
        raise ImageFileError(
            file_name,
            image_id,
            "undecodable",
            f"is not an image OpenCV can decode (it starts with {data[:16]!r})",
        )
    return image
