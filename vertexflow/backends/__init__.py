"""Storage backends. The contract is in :mod:`vertexflow.backends.base`.

Backend classes are imported lazily (an S3 copy need not import the Yandex
client): :data:`BACKEND_CLASSES` maps a remote type to ``"module:Class"``.
"""

from __future__ import annotations

import importlib

from .base import Backend, check_key, join_key

BACKEND_CLASSES: dict[str, str] = {
    "local": "vertexflow.backends.local:LocalBackend",
    "s3": "vertexflow.backends.s3:S3Backend",
    "yandex_disk": "vertexflow.backends.yandex:YandexDiskBackend",
}


def backend_class(kind: str) -> type[Backend]:
    module_name, _, class_name = BACKEND_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["BACKEND_CLASSES", "Backend", "backend_class", "check_key", "join_key"]
