"""Check a user's callback at registration: can Voxtra call it the way it will?

Why: a wrong ``on_hangup`` callback (no parameter, or a plain ``def``) used to fail only
when the call hung up, where the error is logged and the callback's work is lost. Here
it fails at once, at the line that registered it, with
:class:`~voxtra.errors.CallbackSignatureError`.

Lenient where it cannot tell: a callable whose signature Python cannot read (some
builtins, C extensions) or that is not plainly sync (an object whose ``__call__``
returns an awaitable, a mock) is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from typing import Any

from voxtra.errors import CallbackSignatureError

__all__ = ["check_callback"]


def _describe(callback: Any) -> str:
    target = callback
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{name}()" if isinstance(name, str) else repr(callback)


def _plainly_sync(callback: Any) -> bool:
    """True only when ``callback`` is certainly not a coroutine function."""
    target = callback
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target) or asyncio.iscoroutinefunction(target):
        return False
    # A decorator's sync wrapper (functools.wraps) around an async function returns
    # its coroutine: awaitable, so accepted.
    with contextlib.suppress(ValueError):
        if inspect.iscoroutinefunction(inspect.unwrap(target)):
            return False
    if inspect.isfunction(target) or inspect.ismethod(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004 (the type's, not the object's)
    if inspect.isfunction(call):
        return not inspect.iscoroutinefunction(call)
    return False


def check_callback(
    callback: Any,
    what: str,
    params: tuple[str, ...],
    *,
    require_async: bool = True,
) -> None:
    """Raise CallbackSignatureError unless ``callback`` takes ``len(params)`` positional
    arguments (named ``params`` in the message) and, if ``require_async``, is async."""
    shape = f"{'async ' if require_async else ''}def {what}({', '.join(params)})"
    if not callable(callback):
        raise CallbackSignatureError(
            f"{what}: expected a callable like `{shape}`, got {callback!r}"
        )
    name = _describe(callback)
    if require_async and _plainly_sync(callback):
        raise CallbackSignatureError(
            f"{what}: {name} must be 'async def' (Voxtra awaits it); expected `{shape}`"
        )
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return  # not introspectable: accept it
    try:
        signature.bind(*params)
    except TypeError as exc:
        taken = str(signature)
        raise CallbackSignatureError(
            f"{what}: {name} takes {taken} but is called with {len(params)} argument(s) "
            f"({', '.join(params) or 'none'}); expected `{shape}` ({exc})"
        ) from None
