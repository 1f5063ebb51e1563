"""Fault injection by wrapping a backend (never by patching a client).

:class:`FaultyBackend` is a backend decorator that fails chosen calls of a
real backend, so engine tests can see retries, per-object failures and aborts
against real storage. Like every decorator it hides the ``local_path``
feature, so the engine goes through ``put``/``open`` where the faults are.
"""

from __future__ import annotations

from collections.abc import Callable

from ..backends.base import Backend, UploadCheckpoint
from ..errors import TransientError
from ..middleware.base import BackendWrapper
from ..model import BodyFactory, ObjectInfo


def _transient(key: str) -> Exception:
    return TransientError("injected 503 Service Unavailable", backend="faulty", key=key)


class FaultyBackend(BackendWrapper):
    """Wraps ``inner``; the first ``put_failures`` puts of each key raise ``error(key)``.

    ``put_calls`` records every put per key, in call order.
    """

    def __init__(self, inner: Backend, *, put_failures: int = 0,
                 error: Callable[[str], Exception] = _transient) -> None:
        super().__init__(inner)
        self.put_failures = put_failures
        self.error = error
        self.put_calls: dict[str, int] = {}

    def describe(self) -> str:
        return f"faulty({self.inner.describe()})"

    async def put(self, info: ObjectInfo, body: BodyFactory, *,
                  checkpoint: UploadCheckpoint | None = None) -> ObjectInfo:
        n = self.put_calls[info.key] = self.put_calls.get(info.key, 0) + 1
        if n <= self.put_failures:
            raise self.error(info.key)
        return await super().put(info, body, checkpoint=checkpoint)
