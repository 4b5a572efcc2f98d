"""The stack: shared settings (settings.py), what every engine does (engine.py), and one module per engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hub_ext.naming import PROJECT_LABEL

from ..docker_io import StackDocker
from .compose import ComposeStack, compose_argv
from .engine import Stack
from .settings import (
    ENGINES,
    StackOptions,
    recorded_engine,
    validate_engine,
    validate_port,
    validate_project,
    validate_routing_mesh,
)

__all__ = [
    "ENGINES",
    "PROJECT_LABEL",
    "ComposeStack",
    "Stack",
    "StackOptions",
    "compose_argv",
    "open_stack",
    "recorded_engine",
    "validate_engine",
    "validate_port",
    "validate_project",
    "validate_routing_mesh",
]


def open_stack(options: StackOptions, docker: StackDocker, root: Path, say: Callable[[str], None]) -> Stack:
    """The stack of `options.engine`."""
    validate_engine(options.engine)
    if options.engine == "swarm":
        from .swarm import SwarmStack

        return SwarmStack(options, docker, root, say)
    return ComposeStack(options, docker, root, say)
