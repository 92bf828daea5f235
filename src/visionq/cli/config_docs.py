"""docs/configuration.md, generated from the docstrings of `Settings` (a test keeps the file current)."""

from __future__ import annotations

from pydantic_core import PydanticUndefined

from visionq.settings import Settings

HEADER = """# Configuration

Every setting is an environment variable `VISIONQ_<NAME>` (or a line of a `.env` file in the
working directory). This page is generated from `src/visionq/settings.py`:
`python -m visionq config-docs > docs/configuration.md`.

| variable | default | meaning |
|---|---|---|
"""


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "`~/.local/share/visionq`" if name == "data_dir" else f"`{field.default_factory()}`"  # type: ignore[call-arg]
    if field.default is PydanticUndefined or field.default is None:
        return "(unset)"
    value = field.default.value if hasattr(field.default, "value") else field.default
    return f"`{value}`"


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `VISIONQ_{name.upper()}` | {_default(name)} | {meaning} |\n")
    return HEADER + "".join(rows)
