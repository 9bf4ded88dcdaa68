"""Find the user's own node modules (``node: mynodes:FaceBlur``) without shadowing libraries.

A graph file may name a node class by module path, ``module:Class``. The module is looked up:

1. in the graph file's folder (``/somewhere/blur.yaml`` finds ``/somewhere/mynodes.py``,
   whatever the current folder is);
2. in the current folder;
3. among installed packages (``pip install -e .`` of the user's project).

Only the user's module is resolved that way. Its folder is appended to ``sys.path`` (after
site-packages), so the module can import a helper next to it, but a stray ``cv2.py`` or
``numpy.py`` in that folder never replaces the real library, neither here nor in a built-in
node: built-in nodes (registered entry points) never touch ``sys.path``.

Relative paths in ``params`` (a video, a model file, an output) are not looked up this way:
like any command-line tool's arguments they are relative to the current folder, in
``pipeline check``, ``pipeline run``, ``pipeline bench`` and every node process alike.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from pipeline.errors import NodeDefinitionError, RegistryError

__all__ = ["UserImportError", "import_user_module", "search_folders"]


class UserImportError(RegistryError):
    """The user's module was not found, or failed while being imported.

    Attributes:
        hints: lines that say what to do (shown under the error by ``pipeline check``).
    """

    def __init__(self, message: str, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.hints = tuple(hints)


def search_folders(graph_file: str | Path | None = None) -> tuple[str, ...]:
    """Where a ``module:Class`` node's module is looked for: the graph's folder, then cwd."""
    folders: list[str] = []
    if graph_file is not None and Path(graph_file).is_file():
        folders.append(str(Path(graph_file).resolve().parent))
    cwd = os.getcwd()
    if cwd not in folders:
        folders.append(cwd)
    return tuple(folders)


def _describe_folders(folders: Sequence[str], graph_first: bool) -> str:
    cwd = os.getcwd()
    parts = []
    for i, folder in enumerate(folders):
        if folder == cwd:
            label = "the current folder"
        elif i == 0 and graph_first:
            label = "the graph's folder"
        else:
            label = "a search folder"
        parts.append(f"{folder} ({label})")
    return ", ".join(parts)


def _same_origin(module: ModuleType, spec: importlib.machinery.ModuleSpec) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and spec.origin is not None and Path(file) == Path(spec.origin)


def import_user_module(module_name: str, folders: Sequence[str]) -> ModuleType:
    """Import ``module_name`` (dotted), looking in ``folders`` first, then installed packages.

    Raises:
        UserImportError: not found (the message names every folder searched and the fix),
            or the module raised while importing (the message names the file and line).
        NodeDefinitionError: a Node class in the module is malformed (as it is).
    """
    top = module_name.split(".", 1)[0]
    spec = importlib.machinery.PathFinder.find_spec(top, list(folders))
    if spec is not None and spec.origin is not None and spec.loader is not None:
        folder = str(Path(spec.origin).parent)
        if spec.submodule_search_locations is not None:  # a package: origin is __init__.py
            folder = str(Path(spec.origin).parent.parent)
        loaded = sys.modules.get(top)
        if loaded is not None and not _same_origin(loaded, spec):
            if getattr(loaded, "__file__", None) is None or not _is_user_module(loaded):
                raise UserImportError(
                    f"{spec.origin} has the name of the installed module {top!r} "
                    f"({getattr(loaded, '__file__', 'built in')})",
                    [
                        f"hint: rename {Path(spec.origin).name} (a name no package uses) "
                        "and the node: line with it"
                    ],
                )
            # another graph's module of the same name: this graph gets its own
            for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
                del sys.modules[name]
            loaded = None
        if loaded is None:
            if folder not in sys.path:
                sys.path.append(folder)  # after site-packages: helpers next to it, no shadowing
            module = importlib.util.module_from_spec(spec)
            module.__dict__["__pipeline_user_module__"] = True
            sys.modules[top] = module
            try:
                spec.loader.exec_module(module)
            except NodeDefinitionError:
                sys.modules.pop(top, None)
                raise
            except Exception as exc:
                sys.modules.pop(top, None)
                raise _failed_inside(module_name, exc) from exc
    try:
        return importlib.import_module(module_name)
    except NodeDefinitionError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            searched = _describe_folders(folders, graph_first=len(folders) > 1)
            file = module_name.replace(".", "/")
            raise UserImportError(
                f"cannot import module {module_name!r}: no {file}.py or {file}/ package in "
                f"{searched}, nor among installed packages",
                [
                    f"hint: put {file.rsplit('/', 1)[-1]}.py next to the graph file, "
                    "or install the package that has it (pip install -e .)",
                ],
            ) from exc
        raise _failed_inside(module_name, exc) from exc
    except Exception as exc:
        raise _failed_inside(module_name, exc) from exc


def _is_user_module(module: ModuleType) -> bool:
    return bool(module.__dict__.get("__pipeline_user_module__"))


def _failed_inside(module_name: str, exc: BaseException) -> UserImportError:
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    where = f" at {user[-1].filename}:{user[-1].lineno}" if user else ""
    hints = []
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        hints.append(f"hint: install the package that provides {exc.name!r} (pip install ...)")
    return UserImportError(
        f"importing module {module_name!r} failed{where}: {type(exc).__name__}: {exc}", hints
    )
