"""The exception tree: every exception class of vertexflow is defined in vertexflow.errors, drawn in its docstring."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re

import pytest

import vertexflow
from vertexflow import errors

#: Exceptions that stay where they are used, and why. Each carries control
#: inside one backend and is caught or translated there; none reaches a caller.
LOCAL = {
    # carries a translated error past retry_call in the same module
    "vertexflow.backends.s3.backend._Final",
    # stops botocore's probe request before it is sent, caught two lines below
    "vertexflow.backends.s3.fastpath._Probed",
    # an S3 error answer before translate_error maps it onto the tree (botocore's ClientError, for the fast path)
    "vertexflow.backends.s3.errors.S3HTTPError",
}


def vertexflow_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a vertexflow module (the emulators of vertexflow.testing aside)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(vertexflow.__path__, "vertexflow."):
        if info.name == "vertexflow.testing" or info.name.startswith("vertexflow.testing."):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def drawn_tree() -> dict[str, str | None]:
    """The classes the docstring of vertexflow.errors draws, each with the class drawn above it (None at a root)."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    in_block = False
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        if line.rstrip().endswith("::"):
            in_block, stack = True, []
            continue
        if not line.strip():
            continue
        if not line.startswith("    "):
            in_block = False
            continue
        if not in_block:
            continue
        match = re.match(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Za-z_]\w*)", line)
        assert match, f"a line of the tree that names no class: {line!r}"
        depth = len(match["lead"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        name = match["name"]
        assert name not in parents, f"{name} is drawn twice"
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_every_exception_is_defined_in_errors() -> None:
    elsewhere = sorted(name for name, cls in vertexflow_exceptions().items()
                       if cls.__module__ != "vertexflow.errors" and name not in LOCAL)
    assert not elsewhere, f"exception classes defined outside vertexflow.errors: {elsewhere}"


def test_the_local_ones_still_exist() -> None:
    """An entry of LOCAL that is gone (or moved to errors) is taken out of the list."""
    assert LOCAL <= set(vertexflow_exceptions())


@pytest.mark.parametrize("cls", sorted((c for c in vertexflow_exceptions().values()
                                        if c.__module__ == "vertexflow.errors"), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_exception_is_drawn_under_its_base(cls: type[BaseException]) -> None:
    tree = drawn_tree()
    assert cls.__name__ in tree, f"{cls.__name__} is not in the tree of the vertexflow.errors docstring"
    drawn_parent = tree[cls.__name__]
    base = cls.__bases__[0]
    if drawn_parent is None:
        assert base is Exception, f"{cls.__name__} is drawn as a root but derives from {base.__name__}"
    else:
        assert drawn_parent == base.__name__, (f"{cls.__name__} is drawn under {drawn_parent} "
                                               f"but derives from {base.__name__}")


def test_the_tree_draws_no_class_that_is_not_there() -> None:
    known = {c.__name__ for c in vertexflow_exceptions().values() if c.__module__ == "vertexflow.errors"}
    stray = [name for name in drawn_tree()
             if name not in known and not isinstance(getattr(builtins, name, None), type)]
    assert not stray, f"the docstring tree names classes vertexflow.errors does not define: {stray}"
