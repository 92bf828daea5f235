"""GET /models: the models this service can run; GET /models/{ref}: one model's card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends

from visionq import errors
from visionq.api.dependencies import StateDep, get_principal
from visionq.api.problems import problem_responses, protected_responses
from visionq.api.state import AppState
from visionq.imaging.transforms import Transform
from visionq.inference.manifest import labels_sha256
from visionq.inference.spec import ModelSpec, Precision, Runtime
from visionq.jobs import heartbeats
from visionq.jobs.breakers import BreakerState, breaker_states
from visionq.wire.schemas import ModelCard, ModelInfo, TransformInfo

router = APIRouter(tags=["models"], responses=protected_responses(), dependencies=[Depends(get_principal)])


@dataclass
class WorkerModels:
    """What the live worker processes report of their models in their heartbeats."""

    workers: int = 0
    """Live worker processes."""
    loaded_by: dict[str, int] = field(default_factory=dict)
    """How many processes have each model (by ref) loaded."""
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    """How each model a live worker has loaded is run, as the worker reports it: runtime; agreement and sample
    (a built-in's export check, else None); and, from workers that report them, weights_sha256,
    runtime_version and (an int8 build) cpu_feature."""


async def worker_models(state: AppState) -> WorkerModels:
    report = WorkerModels()
    for beat in await heartbeats.live(state.redis):
        for ref in beat.models:
            report.loaded_by[ref] = report.loaded_by.get(ref, 0) + 1
        report.exports.update(beat.exports)
        report.workers += 1
    return report


@router.get("/models", response_model=list[ModelInfo])
async def list_models(state: StateDep) -> list[ModelInfo]:
    """Every model of the catalog, with its aliases, how it runs and whether a worker has it loaded."""
    workers = await worker_models(state)
    latest = await state.latest.get()
    breakers = await breaker_states(state.redis)
    return [
        model_info(spec, state, workers=workers, latest=latest, breakers=breakers) for spec in state.catalog.specs()
    ]


@router.get("/models/{ref}", response_model=ModelCard, responses=problem_responses(errors.JobNotFound))
async def get_model(ref: str, state: StateDep) -> ModelCard:
    """One model's card: its `/models` entry, its whole preprocessing, and its weights as the workers run them."""
    latest = await state.latest.get()
    try:
        spec = await state.sources.resolve_async(ref, latest=latest)
    except (errors.ModelNotFound, errors.ValidationFailed) as exc:  # a malformed ref names no model either
        raise errors.JobNotFound(exc.detail) from exc
    workers = await worker_models(state)
    breakers = await breaker_states(state.redis)
    info = model_info(spec, state, workers=workers, latest=latest, breakers=breakers)
    return model_card(
        info,
        spec,
        export=workers.exports.get(spec.ref),
        labels=state.catalog.labels(spec),
        breaker_reason=breakers.get(spec.ref, (BreakerState.CLOSED, ""))[1],
    )


def model_card(
    info: ModelInfo,
    spec: ModelSpec,
    *,
    export: Mapping[str, Any] | None,
    labels: Sequence[str],
    breaker_reason: str = "",
) -> ModelCard:
    """`info` (the model's `/models` entry) with the rest of its card: the transform its spec declares, and what a
    live worker reports of the model in `export` (None when no live worker has loaded it)."""
    reported = export or {}
    transform = spec.transform
    return ModelCard(
        **info.model_dump(),
        transform=transform_info(transform),
        preprocessing=transform.canonical(),
        preprocessing_sha256=transform.sha256(),
        labels_sha256=labels_sha256(labels),
        weights_sha256=reported.get("weights_sha256"),
        runtime_version=reported.get("runtime_version"),
        agreement_sample=reported.get("sample") if info.agreement is not None else None,
        cpu_feature=reported.get("cpu_feature"),
        breaker_reason=breaker_reason or None,
    )


def transform_info(transform: Transform) -> TransformInfo:
    # Validated from plain values: the wire shape names the enums' values, without importing imaging (numpy).
    return TransformInfo.model_validate(
        {
            "resize": transform.resize.value,
            "crop_fraction": transform.crop_fraction,
            "interpolation": transform.interpolation.value,
            "mean": transform.mean,
            "std": transform.std,
            "input_size": transform.input_size,
            "channel_order": transform.channel_order.value,
        }
    )


def model_info(
    spec: ModelSpec,
    state: AppState,
    *,
    workers: WorkerModels,
    latest: str | None,
    breakers: dict[str, tuple[BreakerState, str]],
) -> ModelInfo:
    export = workers.exports.get(spec.ref)
    runtime = spec.runtime.value
    if spec.runtime is Runtime.TORCH:  # a built-in: run as the workers say, else as configured
        configured = "onnx" if spec.precision is Precision.INT8 else state.settings.builtin_runtime.value
        runtime = export["runtime"] if export else configured
    return ModelInfo(
        name=spec.name,
        version=spec.version,
        aliases=state.catalog.aliases(spec, latest=latest),
        input_size=spec.input_size,
        num_classes=spec.num_classes,
        runtime=runtime,
        precision=spec.precision.value,
        agreement=export["agreement"] if export else None,
        loaded=spec.ref in workers.loaded_by,
        description=spec.description,
        breaker=breakers.get(spec.ref, (BreakerState.CLOSED, ""))[0].value,
    )
