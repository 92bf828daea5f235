"""GET /models: the models this service can run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends

from visionq.api.dependencies import StateDep, get_principal
from visionq.api.problems import protected_responses
from visionq.api.schemas import ModelInfo
from visionq.api.state import AppState
from visionq.inference.spec import ModelSpec, Precision, Runtime
from visionq.jobs import heartbeats
from visionq.jobs.breakers import BreakerState, breaker_states

router = APIRouter(tags=["models"], responses=protected_responses(), dependencies=[Depends(get_principal)])


@dataclass
class WorkerModels:
    """What the live worker processes report of their models in their heartbeats."""

    workers: int = 0
    """Live worker processes."""
    loaded_by: dict[str, int] = field(default_factory=dict)
    """How many processes have each model (by ref) loaded."""
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    """How each built-in model served from a verified export is run: runtime, agreement, sample."""


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
