"""Paths through the model graph as findings show them: readable names and the nearest source line."""

from __future__ import annotations

from typing import Iterable

from graphcheck.finding import Location
from graphcheck.model_graph import ModelGraph


def readable_path(mg: ModelGraph, path: list[str]) -> list[str]:
    """Node names along a path, with consecutive repeats (ops of one module call) merged."""
    names: list[str] = []
    for node in path:
        name = mg.describe(node)
        if not names or names[-1] != name:
            names.append(name)
    return names


def location_on_path(mg: ModelGraph, path: list[str], index: int) -> Location | None:
    """Source line of path[index], or of the closest op before it that has one."""
    for position in range(index, -1, -1):
        location = mg.location_of(path[position])
        if location is not None:
            return location
    for position in range(index + 1, len(path)):
        location = mg.location_of(path[position])
        if location is not None:
            return location
    return None


def first_location(graph: ModelGraph, nodes: Iterable[str]) -> Location | None:
    for node in nodes:
        location = graph.location_of(node)
        if location is not None:
            return location
    return None
