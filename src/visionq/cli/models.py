"""`visionq models`: the catalog and one model's card (client commands, `show`), and `push`, which publishes a
model version to the model repository with the server's settings (as `visionq keys` works on its database).

`visionq models` and `visionq models REF` stay as they were: a first argument that names no sub-command is the
`show` command's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from visionq.cli import jobs
from visionq.cli.options import EXIT_FAILED, EXIT_USAGE, errors, load_settings, require_extra

#: The command that `visionq models [REF]` runs.
SHOW = "show"


class _ShowByDefault(TyperGroup):
    """A group whose first argument, when it names none of its commands, is the `show` command's (its REF or an
    option): `visionq models`, `visionq models REF --json`. Help of the group itself stays `--help`."""

    # `ctx` is the Context of the click that typer vendors, which typer does not export under a public name.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = [SHOW, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_ShowByDefault,
    help="The service's models: `visionq models [REF]` lists them or shows one model's card; `visionq models push` "
    "publishes a version to the model repository.",
)
app.command(SHOW)(jobs.models)


@app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="The model's name (lower-case letters, digits, `.`, `_`, `-`).")],
    path: Annotated[
        Path,
        typer.Argument(help="A folder with `manifest.toml`, the weights and the labels; or a single .onnx file."),
    ],
    version: Annotated[
        int | None, typer.Option(help="Publish as this version, if it is free. Default: the highest + 1.", min=1)
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="For a single .onnx file: its labels file (one class a line), or `imagenet`.")
    ] = None,
    input_size: Annotated[
        int | None, typer.Option(help="For a single .onnx file: its square input side, in pixels.", min=1, max=2048)
    ] = None,
) -> None:
    """Publish a model version to VISIONQ_MODEL_REPOSITORY, with the weights' SHA-256 in its manifest, and print
    `NAME@VERSION SHA256`. Running services list it within VISIONQ_MODEL_REPOSITORY_POLL seconds, or at once
    when a request names it."""
    require_extra("models push", "api")
    settings = load_settings()
    if settings.model_repository is None:
        errors.print("error: VISIONQ_MODEL_REPOSITORY is not set: a folder, or s3://bucket/prefix", markup=False)
        raise typer.Exit(EXIT_USAGE)
    from visionq.inference.catalog import fixed_specs
    from visionq.inference.publish import file_release, folder_release
    from visionq.inference.publish import push as publish
    from visionq.inference.repository import open_repository

    try:
        repository = open_repository(settings, publishing=True)
        assert repository is not None  # model_repository is set
        if path.is_dir():
            if labels is not None or input_size is not None:
                raise ValueError(
                    "--labels and --input-size are for a single .onnx file; a folder's manifest gives them"
                )
            release = folder_release(path, name)
        elif path.is_file():
            release = file_release(path, name, labels=labels, input_size=input_size)
        else:
            raise ValueError(f"{path} is neither a folder nor a file")
        taken = {spec.version for spec in fixed_specs(settings) if spec.name == name}
        pushed = publish(repository, release, taken=taken, version=version)
    except OSError as exc:  # the repository (RepositoryError) or a local file
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    except ValueError as exc:  # refused: a broken manifest, a missing file, a version taken
        errors.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(f"{pushed.version.ref} {pushed.sha256}")
