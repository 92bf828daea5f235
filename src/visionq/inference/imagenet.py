"""The 1,000 ImageNet-1k class names, in class-id order, as the built-in models number them.

The names are Keras' (`imagenet_class_index.json`) with underscores turned into spaces, so that
class 285 is "Egyptian cat". Two names occur twice (134 and 517 "crane", 638 and 639 "maillot"),
as in the original synsets: callers must key on the class id, never on the name.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

IMAGENET_NUM_CLASSES = 1000


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The ImageNet-1k class names, index = class id.

    >>> labels = imagenet_labels()
    >>> len(labels), labels[281], labels[285]
    (1000, 'tabby', 'Egyptian cat')
    """
    text = files("visionq.inference").joinpath("imagenet_labels.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != IMAGENET_NUM_CLASSES:  # a packaging fault, not a user error
        raise RuntimeError(f"imagenet_labels.txt has {len(labels)} names, expected {IMAGENET_NUM_CLASSES}")
    return labels
