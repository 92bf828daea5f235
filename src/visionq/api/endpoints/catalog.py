"""GET /models: the models this service can run."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends

from visionq.api.dependencies import StateDep, get_principal
from visionq.api.problems import protected_responses
from visionq.api.schemas import ModelInfo
from visionq.inference.breaker import BreakerState, breaker_states
from visionq.inference.catalog import Catalog
from visionq.inference.spec import ModelSpec
from visionq.jobs import keys

router = APIRouter(tags=["models"], responses=protected_responses(), dependencies=[Depends(get_principal)])


async def loaded_models(state: StateDep) -> set[str]:
    """Model refs that at least one live worker process reports loaded in its heartbeat."""
    loaded: set[str] = set()
    async for key in state.redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=100):
        models = await state.redis.hget(key, "models")
        if models:
            loaded.update(orjson.loads(models))
    return loaded


@router.get("/models", response_model=list[ModelInfo])
async def list_models(state: StateDep) -> list[ModelInfo]:
    """Every model of the catalog, with its aliases and whether a worker has it loaded."""
    loaded = await loaded_models(state)
    latest = await state.latest.get()
    breakers = await breaker_states(state.redis)
    return [
        model_info(spec, state.catalog, loaded=spec.ref in loaded, latest=latest, breakers=breakers)
        for spec in state.catalog.specs()
    ]


def model_info(
    spec: ModelSpec,
    catalog: Catalog,
    *,
    loaded: bool,
    latest: str | None,
    breakers: dict[str, tuple[BreakerState, str]],
) -> ModelInfo:
    return ModelInfo(
        name=spec.name,
        version=spec.version,
        aliases=catalog.aliases(spec, latest=latest),
        input_size=spec.input_size,
        num_classes=spec.num_classes,
        runtime=spec.runtime.value,
        loaded=loaded,
        description=spec.description,
        breaker=breakers.get(spec.ref, (BreakerState.CLOSED, ""))[0].value,
    )
