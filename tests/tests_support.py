"""Constants shared by tests of several layers."""

from pathlib import Path

REPO = Path(__file__).parent.parent
#: What the exact built-in models call skimage's chelsea, in every encoding the tests make of it (0.75–0.9).
EGYPTIAN_CAT = 285
#: ImageNet ids a cat photo may honestly get: tabby, tiger cat, Egyptian cat (an int8 build may weigh them otherwise).
CAT_CLASSES = frozenset({281, 282, 285})
