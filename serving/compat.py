"""What the model server needs from Python 3.11 and newer, for replicas on an older interpreter.

A replica runs on the Python its environment asks for (an MLflow model saved on Python 3.10, a curated
environment on 3.10): the model server itself must then run there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

if sys.version_info >= (3, 11):  # noqa: UP036 -- replicas may run an older Python than Studio
    timeout_at = asyncio.timeout_at
else:

    @contextlib.asynccontextmanager
    async def timeout_at(when: float) -> AsyncIterator[None]:
        """asyncio.timeout_at for Python 3.10: TimeoutError once the loop's clock passes `when`."""
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_at(when, expire)
        try:
            yield
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()
