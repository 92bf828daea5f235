"""Constants shared by tests of several layers."""

from pathlib import Path

REPO = Path(__file__).parent.parent
#: ImageNet ids a cat photo may honestly get: tabby, tiger cat, Egyptian cat.
CAT_CLASSES = frozenset({281, 282, 285})
