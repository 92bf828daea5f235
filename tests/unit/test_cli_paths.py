"""How `visionq classify` turns its PATH arguments into images: files as given, directories, globs."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionq.cli.paths import PathsNotFound, expand_images


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("b.jpg", "a.PNG", "c.webp", "notes.txt", ".hidden.jpg", "sub/d.jpg", "sub/deeper/e.gif"):
        path = tmp_path / "photos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def names(paths: list[Path]) -> list[str]:
    return [path.as_posix() for path in paths]


def test_a_directory_gives_its_image_files_sorted_not_recursive_not_hidden(tree: Path) -> None:
    assert names(expand_images(["photos"])) == ["photos/a.PNG", "photos/b.jpg", "photos/c.webp"]


def test_a_file_named_on_the_command_line_is_taken_whatever_its_suffix(tree: Path) -> None:
    assert names(expand_images(["photos/notes.txt", "photos/.hidden.jpg"])) == [
        "photos/notes.txt",
        "photos/.hidden.jpg",
    ]


def test_globs_are_expanded_recursively_with_double_star(tree: Path) -> None:
    assert names(expand_images(["photos/*.jpg"])) == ["photos/b.jpg"]
    assert names(expand_images(["photos/**/*.jpg"])) == ["photos/b.jpg", "photos/sub/d.jpg"]


def test_a_glob_matching_directories_gives_their_images(tree: Path) -> None:
    assert names(expand_images(["photos/su*"])) == ["photos/sub/d.jpg"]


def test_each_image_is_taken_once_in_the_order_first_named(tree: Path) -> None:
    assert names(expand_images(["photos/c.webp", "photos", "photos/*.jpg"])) == [
        "photos/c.webp",
        "photos/a.PNG",
        "photos/b.jpg",
    ]


def test_every_argument_that_names_nothing_is_reported(tree: Path) -> None:
    with pytest.raises(PathsNotFound) as missing:
        expand_images(["photos/b.jpg", "nope.jpg", "photos/*.bmp"])
    assert missing.value.arguments == ["nope.jpg", "photos/*.bmp"]


def test_an_empty_directory_gives_nothing_without_failing(tree: Path) -> None:
    (tree / "empty").mkdir()
    assert expand_images(["empty"]) == []
