"""Decorating entrypoints: a fresh run (or span) per call, for the call's whole life.

For a coroutine function that is the call. For an async generator function it is the
whole iteration: the run ends when the generator is exhausted, raises, or is closed
early (``break``, ``aclose()``, garbage collection), and it is current only while the
generator's own body runs, not in the consumer between items.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Coroutine
    from types import TracebackType

log = logging.getLogger("aioprefactor")

H = TypeVar("H")
P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")


class Decorator(Generic[H]):
    """Gives a scope (with ``_enter``/``_exit`` and activation) its decorator form."""

    def __init__(self) -> None:
        # Handles entered through ``async with`` and not yet exited, oldest first.
        self._entered: list[H] = []

    async def _enter(self) -> H:
        raise NotImplementedError

    async def _exit(self, handle: H, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _activate(self, handle: H) -> None:
        raise NotImplementedError

    def _deactivate(self, handle: H) -> None:
        raise NotImplementedError

    def _current(self) -> H | None:
        """The handle this scope made current here, if it is the current one."""
        raise NotImplementedError

    async def __aenter__(self) -> H:
        handle = await self._enter()
        self._activate(handle)
        self._entered.append(handle)
        return handle

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        handle = self._current()
        if handle is None or all(entered is not handle for entered in self._entered):
            # Exited from another context (an exit stack closed by another task, a
            # hand-driven __aexit__): the handle is still finished, and the block's
            # exception still propagates.
            if not self._entered:
                raise RuntimeError(f"{self!r} exited without being entered")
            handle = self._entered[-1]
            log.warning("aioprefactor: %r exited in another context than it entered", self)
        self._entered = [entered for entered in self._entered if entered is not handle]
        with contextlib.suppress(ValueError):  # a token made in another context
            self._deactivate(handle)
        await self._exit(handle, exc)
        return False

    @overload
    def __call__(
        self, fn: Callable[P, AsyncGenerator[Y, S]]
    ) -> Callable[P, AsyncGenerator[Y, S]]: ...

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Wrap an ``async def`` function or async generator function.

        Raises:
            TypeError: ``fn`` is a plain function or a sync generator function.
        """
        if inspect.isasyncgenfunction(fn):
            return self._wrap_generator(fn)
        if inspect.iscoroutinefunction(fn):
            return self._wrap_coroutine(fn)
        kind = "generator function" if inspect.isgeneratorfunction(fn) else "function"
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"cannot decorate the sync {kind} {name}: only async def functions and async "
            "generator functions are supported; sync support is not there yet"
        )

    def _wrap_coroutine(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            async with self:
                return await fn(*args, **kwargs)

        return call

    def _wrap_generator(
        self, fn: Callable[P, AsyncGenerator[Y, S]]
    ) -> Callable[P, AsyncGenerator[Y, S]]:
        @functools.wraps(fn)
        async def iterate(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, S]:
            # Call first: a bad call raises here, before a run is opened that nothing
            # would finish.
            inner = fn(*args, **kwargs)
            handle = await self._enter()
            ended: BaseException | None = None
            try:
                sent: Any = None
                thrown: BaseException | None = None
                while True:
                    self._activate(handle)
                    try:
                        if thrown is not None:
                            item = await inner.athrow(thrown)
                            thrown = None
                        else:
                            item = await inner.asend(sent)
                    except StopAsyncIteration:
                        break
                    finally:
                        self._deactivate(handle)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as exc:  # noqa: BLE001 - thrown in by the consumer
                        thrown = exc
            except BaseException as exc:
                ended = exc
                raise
            finally:
                self._activate(handle)
                try:
                    await inner.aclose()
                finally:
                    self._deactivate(handle)
                    await self._exit(handle, ended)

        return iterate
