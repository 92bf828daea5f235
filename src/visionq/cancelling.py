"""Cancelling asyncio tasks for good.

On Python 3.11 `asyncio.wait_for` (which redis-py's reads and writes go through) swallows a cancellation that arrives
as the operation it waits on completes: the task goes on as if never cancelled. A shutdown that cancels a task once
and awaits it then waits for ever (an API process under load hung 30 s and more in its shutdown, its event-listening
task still running). `cancel` asks again until the tasks have ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Seconds between repeated cancellations of a task that is still running.
RETRY_EVERY = 0.5


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` and wait until every one has ended (whatever it raised), cancelling again those that go on."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY_EVERY)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: an ended task's error is not logged as never looked at
