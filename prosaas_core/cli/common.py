"""Helpers every command module shares: the runtime, JSON output, one-line errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from prosaas_core.runtime import Runtime


def get_runtime() -> Runtime:
    """The runtime of the current invocation, built on first use from the environment."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Runtime):
        root.obj = Runtime()
    if not root.meta.get("prosaas.close_registered"):
        root.meta["prosaas.close_registered"] = True
        root.call_on_close(root.obj.close)
    return root.obj


def pass_runtime(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the runtime as the command's first argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(get_runtime(), *args, **kwargs)

    return wrapper


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, default=str, sort_keys=True))


class UserError(click.ClickException):
    """A user mistake: printed as one line ``error: ...``, exit code 1 (or the one given)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads the instance's value

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
