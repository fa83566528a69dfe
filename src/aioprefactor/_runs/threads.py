"""Carrying the current run and span into threads.

The current run and span live in ContextVars. ``asyncio.to_thread``, tasks, and an
executor handed ``contextvars.copy_context().run`` carry them already; a plain
``ThreadPoolExecutor``, ``loop.run_in_executor`` and ``threading.Thread`` do not, so
code there would find no current run. The two helpers here close that gap:

```python
with agent_instance(agent_version=version):
    with ContextThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(search, queries))  # spans in search() join this run
    threading.Thread(target=wrap(index), args=(answers,)).start()

async with agent_instance(agent_version=version):
    await loop.run_in_executor(None, wrap(search), query)
```

Each call runs in its own copy of the captured context, never in the captured context
itself: calls cannot leak values into one another, and one wrapped callable may run in
many threads at once (a context can be entered by one thread at a time only).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from concurrent.futures import Future

P = ParamSpec("P")
R = TypeVar("R")


def _bind(fn: Callable[P, R], context: contextvars.Context) -> Callable[P, R]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.copy().run(fn, *args, **kwargs)

    return call


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to the current context: calls made anywhere see this run and span.

    The context is captured when ``wrap`` is called; every call of the result runs in a
    fresh copy of it, so it can be handed to another thread, an executor, or called
    many times at once.

    ```python
    async with agent_instance(agent_version=version), span("agent:tools"):
        await loop.run_in_executor(None, wrap(search), query)  # nests under agent:tools
        worker = threading.Thread(target=wrap(index), args=(docs,))
    ```

    Args:
        fn: A plain callable. Its signature is kept.

    Raises:
        TypeError: ``fn`` is not callable, or is a coroutine, async generator or
            generator function: their bodies run later, in the context of whoever
            resumes them, so binding the call would bind nothing (tasks and
            ``asyncio.to_thread`` carry the context already).
    """
    candidate: object = fn  # typed as callable, but called by code that is not type-checked
    if not callable(candidate):
        msg = f"wrap() needs a callable, not {type(candidate).__name__}"
        raise TypeError(msg)
    if (
        inspect.iscoroutinefunction(fn)
        or inspect.isasyncgenfunction(fn)
        or inspect.isgeneratorfunction(fn)
    ):
        name = getattr(fn, "__qualname__", repr(fn))
        msg = (
            f"wrap() binds a plain call to a context, and {name} returns a coroutine or "
            "generator whose body runs later, wherever it is resumed; asyncio tasks and "
            "asyncio.to_thread carry the context already"
        )
        raise TypeError(msg)
    return _bind(fn, contextvars.copy_context())


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose calls see the submitter's run and span.

    ``submit`` runs each call in a copy of the context current where it was submitted;
    ``map`` runs every call in a copy of the context current where ``map`` was called.
    Nothing a call sets leaks into the next call on the same worker thread.

    ```python
    with agent_instance(agent_version=version):
        with ContextThreadPoolExecutor(max_workers=8) as pool:
            pages = list(pool.map(fetch, urls))  # each fetch() span nests under the run
    ```

    It takes ``ThreadPoolExecutor``'s arguments.
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the current context."""
        return super().submit(_bind(fn, contextvars.copy_context()), *args, **kwargs)

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[R]:
        """Like ``Executor.map``, each call in a copy of the context current here.

        Extra keyword arguments go to ``Executor.map`` (``buffersize`` on Python 3.14).
        """
        # Bound once, here: with a buffer the executor submits later calls while the
        # results are consumed, possibly in another context.
        return super().map(
            _bind(fn, contextvars.copy_context()),
            *iterables,
            timeout=timeout,
            chunksize=chunksize,
            **kwargs,
        )
