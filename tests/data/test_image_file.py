"""Completeness of encoded JPEG and PNG files, checked on their bytes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.data.image_file import incomplete_image_reason


def _encoded(ext: str, *params: int) -> bytes:
    noise = np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    return cv2.imencode(ext, noise, list(params))[1].tobytes()


JPEG = _encoded(".jpg")
PROGRESSIVE = _encoded(".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
PNG = _encoded(".png")


@pytest.mark.parametrize("data", [JPEG, PROGRESSIVE, PNG], ids=["jpeg", "progressive", "png"])
def test_complete_files_pass_with_padding_or_trailing_data(data):
    assert incomplete_image_reason(data) is None
    assert incomplete_image_reason(data + b"\x00" * 7) is None
    assert incomplete_image_reason(data + b"\xff\xff\r\n") is None
    # Data after the image (not padding) makes the walk over the segments / chunks decide.
    assert incomplete_image_reason(data + b"appended video" * 4) is None


@pytest.mark.parametrize("data", [JPEG, PROGRESSIVE], ids=["jpeg", "progressive"])
def test_jpeg_without_its_end_marker_is_truncated(data):
    for cut in (2, len(data) // 2, len(data) - 200):
        reason = incomplete_image_reason(data[: len(data) - cut])
        assert reason == (
            f"is truncated: the JPEG ends after {len(data) - cut:,} bytes without its "
            "end-of-image marker (FF D9)"
        )
    # Cut, then zero-filled back to the full length (a preallocated download): still cut.
    assert incomplete_image_reason(data[:-300] + b"\x00" * 300) is not None


def test_png_without_its_iend_chunk_is_truncated():
    # The last 12 bytes are the IEND chunk (length 0, "IEND", CRC).
    assert PNG[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    assert incomplete_image_reason(PNG[:-12]) == (
        f"is truncated: the PNG ends after {len(PNG) - 12:,} bytes, before its IEND chunk"
    )
    # The IEND header is there but its CRC is cut: the chunk is incomplete.
    assert incomplete_image_reason(PNG[:-2]) == (
        f"is truncated: its PNG chunk 'IEND' needs {len(PNG):,} bytes, but the file ends after "
        f"{len(PNG) - 2:,}"
    )
    assert "chunk 'IDAT'" in incomplete_image_reason(PNG[: len(PNG) // 2])


def test_other_formats_are_left_to_the_decoder():
    assert incomplete_image_reason(b"BM" + b"\x00" * 10) is None
    assert incomplete_image_reason(b"plain text") is None
