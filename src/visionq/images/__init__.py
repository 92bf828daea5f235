"""Where uploaded images wait for their worker, out of Redis (a claim check: the job carries only its id).

`create_image_store(settings)` builds the configured `ImageStore`: `DirectoryImages` (a folder, possibly a shared
volume) or `S3Images` (S3-compatible object storage); None means images stay in the job's Redis keys. The API
puts an image once, the worker gets it once, it is deleted when its job ends, and `sweep` clears what crashes
left behind. Failures of a store reach callers as `BrokerUnavailable`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from visionq.images.directory import DirectoryImages
from visionq.images.store import ImageStore, create_image_store

if TYPE_CHECKING:
    from visionq.images.s3 import S3Images

__all__ = ["DirectoryImages", "ImageStore", "S3Images", "create_image_store"]


def __getattr__(name: str) -> object:
    # S3Images on first use only: importing boto3 costs about a third of a second in every process otherwise.
    if name == "S3Images":
        from visionq.images.s3 import S3Images

        return S3Images
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
