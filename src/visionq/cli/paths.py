"""Turn the CLI's PATH arguments (files, directories, globs) into the list of images to submit."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

#: File name endings taken from a directory. A file named on the command line is sent whatever its name:
#: the server decides the type from the bytes and refuses what it cannot read.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

_GLOB_CHARACTERS = frozenset("*?[")


class PathsNotFound(Exception):
    """Some arguments name nothing: no such file, or a pattern that matches nothing."""

    def __init__(self, arguments: list[str]) -> None:
        super().__init__(", ".join(arguments))
        self.arguments = arguments


def expand_images(arguments: Iterable[str]) -> list[Path]:
    """The images named by `arguments`, in order, each once.

    A file is taken as is; a directory gives its image files (by suffix, sorted, not recursive, hidden ones
    skipped, none for an empty one); a glob the shell left unexpanded (`'photos/*.jpg'`, `'**/*.png'`) is expanded here.
    Raises PathsNotFound listing every argument that names nothing.
    """
    images: dict[Path, None] = {}
    missing: list[str] = []
    for argument in arguments:
        found = _expand(argument)
        if found is None:
            missing.append(argument)
        else:
            images.update(dict.fromkeys(found))
    if missing:
        raise PathsNotFound(missing)
    return list(images)


def _expand(argument: str) -> list[Path] | None:
    """The images `argument` names (none for an empty directory); None when it names nothing at all."""
    path = Path(argument)
    if path.is_dir():
        return _images_in(path)
    if path.is_file():
        return [path]
    if _GLOB_CHARACTERS.intersection(argument):
        matches = [Path(match) for match in sorted(glob.glob(argument, recursive=True))]
        return [image for match in matches for image in _expand_match(match)] if matches else None
    return None


def _expand_match(path: Path) -> list[Path]:
    if path.is_dir():
        return _images_in(path)
    return [path] if path.is_file() else []


def _images_in(directory: Path) -> list[Path]:
    return sorted(
        child
        for child in directory.iterdir()
        if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in IMAGE_SUFFIXES
    )
