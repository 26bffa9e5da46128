"""Module hierarchy names in the drawing: levels of a qualified module path, runs of repeated blocks."""

from __future__ import annotations

import re

INDEXED = re.compile(r"^(?:(.*)\.)?(\d+)$")


def levels(module: str) -> tuple[str, ...]:
    """A module path as levels, an index staying with its container.

    ``layer.3.attention`` -> (layer.3, attention); ``blocks.0.1`` -> (blocks.0, 1).
    """
    result: list[str] = []
    for part in module.split(".") if module else ():
        if part.isdigit() and result and not INDEXED.match(result[-1]):
            result[-1] += "." + part
        else:
            result.append(part)
    return tuple(result)


def module_name(key: tuple[str, ...]) -> str:
    return ".".join(key)


def common_prefix(keys: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not keys:
        return ()
    prefix = keys[0]
    for key in keys[1:]:
        size = 0
        while size < min(len(prefix), len(key)) and prefix[size] == key[size]:
            size += 1
        prefix = prefix[:size]
    return prefix


def relative_name(name: str, module: str) -> str:
    return name[len(module) + 1:] if module and name.startswith(module + ".") else name


def run_size(level: str) -> int:
    match = re.search(r"(\d+)-(\d+)$", level)
    return int(match.group(2)) - int(match.group(1)) + 1 if match else 1
