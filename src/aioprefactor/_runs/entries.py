"""Entering and leaving a scope: ``with``/``async with`` blocks and decorated calls.

A scope is immutable and may be shared by every task and thread; each entry (each block,
each call of a decorated function, each generator) gets its own handle, made current in
the ContextVars while its code runs. Generators run in a context of their own, copied
when the generator starts: what their body makes current (a span opened after a
``yield``) stays current across resumes, and none of it leaks to the consumer.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import types
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator
    from types import TracebackType

log = logging.getLogger("aioprefactor")

H = TypeVar("H")
P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")

Call = tuple["Callable[..., Any]", tuple[Any, ...], dict[str, Any]]
NOTHING: Any = object()
"""What a block left with: not a call that returned a value."""


class Collector(Protocol):
    """Keeps what a generator yielded."""

    def add(self, item: object) -> None:
        """Keep one yielded item."""


class Scope(Generic[H]):
    """Gives a scope its block and decorator forms, from a few hooks it provides."""

    __slots__ = ("__weakref__", "_entered")

    def __init__(self) -> None:
        # Handles entered through ``with``/``async with`` and not yet left, by id: only
        # consulted when a block is left from another context than it entered. Made on
        # first use: decorated calls never need it.
        # One open entry is kept as itself; a map is made only for concurrent entries.
        self._entered: H | dict[int, H] | None = None

    # --- hooks ------------------------------------------------------------------------

    def open_entry(self, call: Call | None, *, is_async: bool) -> H:
        """Make and begin a handle for one entry (not yet current)."""
        raise NotImplementedError

    def activate(self, handle: H) -> None:
        """Make ``handle`` current here."""
        raise NotImplementedError

    def deactivate(self, handle: H) -> None:
        """Undo :meth:`activate`."""
        raise NotImplementedError

    def current(self) -> H | None:
        """The handle of this scope current here, if any."""
        raise NotImplementedError

    async def entered(self, handle: H) -> None:
        """Inline delivery: wait for the open (fail-open or raise, having ended the entry)."""

    def entered_sync(self, handle: H) -> None:
        """:meth:`entered` for sync code."""

    async def leave(
        self, handle: H, exc: BaseException | None, output: Any = NOTHING
    ) -> BaseException | None:
        """End the entry; an exception to raise instead of ``exc``, if any.

        ``output`` is what a decorated function returned, or a generator's collector.
        """
        raise NotImplementedError

    def leave_sync(
        self, handle: H, exc: BaseException | None, output: Any = NOTHING
    ) -> BaseException | None:
        """:meth:`leave` for sync code."""
        raise NotImplementedError

    def collector(self, handle: H) -> Collector | None:
        """A sink for what a decorated generator yields (capture), or ``None``."""
        return None

    # --- blocks -------------------------------------------------------------------------

    def _open_entries(self) -> dict[int, H]:
        entered = self._entered
        if entered is None:
            return {}
        if isinstance(entered, dict):
            return entered
        return {id(entered): entered}

    def _pop(self) -> H:
        handle = self.current()
        entries = self._open_entries()
        if handle is None or id(handle) not in entries:
            # Left from another context (an exit stack closed by another task, a
            # hand-driven __aexit__): the latest entry is finished, and the block's
            # exception still propagates.
            if not entries:
                raise RuntimeError(f"{self!r} exited without being entered")
            handle = next(reversed(entries.values()))
            log.warning("aioprefactor: %r exited in another context than it entered", self)
        del entries[id(handle)]
        self._entered = entries if len(entries) > 1 else next(iter(entries.values()), None)
        with contextlib.suppress(ValueError):  # a token made in another context
            self.deactivate(handle)
        return handle

    def _remember(self, handle: H) -> None:
        entered = self._entered
        if entered is None:
            self._entered = handle
            return
        entries = self._open_entries()
        entries[id(handle)] = handle
        self._entered = entries

    async def __aenter__(self) -> H:
        handle = self.open_entry(None, is_async=True)
        await self.entered(handle)
        self.activate(handle)
        self._remember(handle)
        return handle

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        handle = self._pop()
        instead = await self.leave(handle, exc)
        if instead is not None:
            raise instead from exc
        return False

    def __enter__(self) -> H:
        handle = self.open_entry(None, is_async=False)
        self.entered_sync(handle)
        self.activate(handle)
        self._remember(handle)
        return handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        handle = self._pop()
        instead = self.leave_sync(handle, exc)
        if instead is not None:
            raise instead from exc
        return False

    # --- decorators ---------------------------------------------------------------------

    @overload
    def __call__(
        self, fn: Callable[P, AsyncGenerator[Y, S]]
    ) -> Callable[P, AsyncGenerator[Y, S]]: ...

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, Generator[Y, S, R]]) -> Callable[P, Generator[Y, S, R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Record each call of ``fn``: a function, coroutine function or generator function.

        A generator's entry lasts its whole iteration: it ends when the generator is
        exhausted, raises, or is closed early (``cancelled``).

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"a scope decorates functions, not {type(fn).__name__}")
        if inspect.isasyncgenfunction(fn):
            return _async_generator(self, fn)
        if inspect.iscoroutinefunction(fn):
            return _coroutine(self, fn)
        if inspect.isgeneratorfunction(fn):
            return _generator(self, fn)
        return _function(self, fn)


def _coroutine(
    scope: Scope[Any], fn: Callable[P, Coroutine[Any, Any, R]]
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        handle = scope.open_entry((fn, args, kwargs), is_async=True)
        await scope.entered(handle)
        scope.activate(handle)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            scope.deactivate(handle)
            instead = await scope.leave(handle, exc)
            if instead is not None:
                raise instead from exc
            raise
        scope.deactivate(handle)
        await scope.leave(handle, None, result)
        return result

    return call


def _function(scope: Scope[Any], fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        handle = scope.open_entry((fn, args, kwargs), is_async=False)
        scope.entered_sync(handle)
        scope.activate(handle)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            scope.deactivate(handle)
            instead = scope.leave_sync(handle, exc)
            if instead is not None:
                raise instead from exc
            raise
        scope.deactivate(handle)
        scope.leave_sync(handle, None, result)
        return result

    return call


@types.coroutine
def _step(context: contextvars.Context, step: Awaitable[Any]) -> Generator[Any, Any, Any]:
    """Await ``step`` with its code running in ``context`` (the generator's own)."""
    inner = step.__await__()
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        try:
            if thrown is not None:
                signal = context.run(inner.throw, thrown)
            else:
                signal = context.run(inner.send, sent)
        except StopIteration as stop:
            return stop.value
        try:
            sent, thrown = (yield signal), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaited step
            sent, thrown = None, exc


def _async_generator(
    scope: Scope[Any], fn: Callable[P, AsyncGenerator[Y, S]]
) -> Callable[P, AsyncGenerator[Y, S]]:
    @functools.wraps(fn)
    async def iterate(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Y, S]:
        # Call first: a bad call raises here, before an entry is opened that nothing ends.
        inner = fn(*args, **kwargs)
        context = contextvars.copy_context()
        handle = context.run(scope.open_entry, (fn, args, kwargs), is_async=True)
        collect = scope.collector(handle)
        # When entering raises, the entry is ended already: it is not left a second time.
        await _step(context, scope.entered(handle))
        ended: BaseException | None = None
        try:
            context.run(scope.activate, handle)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                try:
                    if thrown is not None:
                        item = await _step(context, inner.athrow(thrown))
                        thrown = None
                    else:
                        item = await _step(context, inner.asend(sent))
                except StopAsyncIteration:
                    break
                if collect is not None:
                    collect.add(item)
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
            try:
                await _step(context, inner.aclose())
            finally:
                instead = await _step(context, scope.leave(handle, ended, collect or NOTHING))
                if instead is not None:
                    raise instead from ended

    return iterate


def _generator(
    scope: Scope[Any], fn: Callable[P, Generator[Y, S, R]]
) -> Callable[P, Generator[Y, S, R]]:
    @functools.wraps(fn)
    def iterate(*args: P.args, **kwargs: P.kwargs) -> Generator[Y, S, R]:
        inner = fn(*args, **kwargs)
        context = contextvars.copy_context()
        handle = context.run(scope.open_entry, (fn, args, kwargs), is_async=False)
        collect = scope.collector(handle)
        # When entering raises, the entry is ended already: it is not left a second time.
        context.run(scope.entered_sync, handle)
        ended: BaseException | None = None
        try:
            context.run(scope.activate, handle)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                try:
                    if thrown is not None:
                        item = context.run(inner.throw, thrown)
                        thrown = None
                    else:
                        item = context.run(inner.send, sent)
                except StopIteration as stop:
                    result: R = stop.value
                    break
                if collect is not None:
                    collect.add(item)
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
            try:
                context.run(inner.close)
            finally:
                instead = context.run(scope.leave_sync, handle, ended, collect or NOTHING)
                if instead is not None:
                    raise instead from ended
        return result

    return iterate
