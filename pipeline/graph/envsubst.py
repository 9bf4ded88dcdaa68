"""``${VAR}`` and ``${VAR:-default}`` in a graph file's values, from the environment.

Substitution happens in scalar values only (never in keys or comments), before validation:

- ``${VAR}``: the variable's value; unset is an error at the value's ``line:col``;
- ``${VAR:-default}``: the default when the variable is unset or empty;
- ``$${`` writes a literal ``${``.

A plain (unquoted) value that is exactly one ``${...}`` takes the type YAML gives the result
(``port: ${PORT:-8080}`` is the integer 8080); a quoted value or one with text around the
``${...}`` stays a string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import yaml

__all__ = ["UnsetVariableError", "substitute"]

_PATTERN = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnsetVariableError(ValueError):
    """A ``${VAR}`` without a default names a variable that is not set (or is malformed)."""

    def __init__(self, message: str, hints: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.hints = hints


def _replace(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        name, sep, default = body.partition(":-")
        if not _NAME.match(name):
            raise UnsetVariableError(
                f"${{{body}}}: not a variable name; write ${{NAME}} or ${{NAME:-default}}",
                ("write $${ for a literal ${",),
            )
        value = env.get(name)
        if value:
            return value
        if sep:
            return default
        if value is not None:
            return value  # set but empty, and no default
        raise UnsetVariableError(
            f"environment variable {name!r} is not set and ${{{name}}} has no default",
            (f"set it (export {name}=...) or give a default: ${{{name}:-value}}",),
        )

    return _PATTERN.sub(one, text)


def substitute(node: yaml.ScalarNode, env: Mapping[str, str] | None = None) -> object | None:
    """The value of a scalar after substitution, or None when it has no ``${``.

    Raises:
        UnsetVariableError: a variable without a default is unset.
    """
    text = node.value
    if "${" not in text:
        return None
    env = os.environ if env is None else env
    result = _replace(text, env)
    whole = _PATTERN.fullmatch(text) is not None and not text.startswith("$$")
    if node.style is None and whole:
        try:
            value = yaml.safe_load(result) if result.strip() else ""
        except yaml.YAMLError:
            return result
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
    return result
