"""The image path of a job: fetch the object from S3, then decode it to RGB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.decode import DecodedImage, decode_image
from worker.storage import FetchedImage, create_s3_client, fetch_image

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["DecodedImage", "FetchedImage", "create_s3_client", "decode_image", "fetch_image", "load_image"]


def load_image(
    client: Any, uri: str, settings: Settings, *, target_size: int | None = None
) -> tuple[FetchedImage, DecodedImage]:
    """Fetch and decode the image at ``uri`` under the settings' byte, pixel and retry limits."""
    fetched = fetch_image(client, uri, max_bytes=settings.max_image_bytes, retries=settings.s3_retries)
    decoded = decode_image(fetched.data, max_pixels=settings.max_image_pixels, target_size=target_size)
    return fetched, decoded
