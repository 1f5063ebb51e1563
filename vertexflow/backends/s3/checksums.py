"""Full-object checksums: the S3 additional checksums a store keeps with an object (``docs/fidelity.md``).

S3 keeps, beside an object, a checksum of all its bytes that the server
computed or checked when the object was written (``x-amz-checksum-crc64nvme``,
``-crc32c``, ``-crc32``, ``-sha256``; AWS gives every object written since
December 2024 a CRC64NVME of its own). Unlike the ``sha256`` user metadata
vertexflow writes, which any client may set to anything, the server refuses
a write whose bytes do not match the checksum sent with it (SeaweedFS and
AWS answer BadDigest), so a stored checksum always describes the stored bytes.

vertexflow sends a CRC64NVME with every object it writes where it can compute
one (:data:`WRITTEN`: the AWS common runtime, ``awscrt``, at ~6 GB/s against
~1 GB/s for SHA-256 here): in the PutObject, and for a multipart upload as a
full-object checksum (CreateMultipartUpload with ``x-amz-checksum-type:
FULL_OBJECT``, each part's own CRC64NVME, the whole object's in
CompleteMultipartUpload). A server that refuses the header (OpenStack Swift
answers 501 to CRC64NVME) is written to without it from then on
(:class:`Sending`); one that ignores it stores nothing and answers nothing,
which changes nothing. Read back with ``x-amz-checksum-mode: ENABLED`` on
HeadObject and GetObject (:func:`stored`), the checksum checks a download of
the whole object and is what ``sync --checksum`` and ``verify`` compare first.

Values are kept in :attr:`~vertexflow.model.ObjectInfo.hashes` as lower-case
hex of the big-endian bytes S3 gives in base64, as any other digest there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ...logs import get_logger
from ...model import CRC32, CRC32C, CRC64NVME, SHA256
from .errors import S3HTTPError

T = TypeVar("T")

log = get_logger(__name__)

try:  # the AWS common runtime: hardware CRC64NVME and CRC32C (botocore uses it for the same)
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - a dependency; without it no CRC64NVME is sent or checked
    _crt = None


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One S3 checksum algorithm: its name in ``ObjectInfo.hashes``, S3's name, its header, its width."""

    name: str
    s3_name: str
    width: int
    #: crc(data, previous) -> int, or None: not computed here (SHA-256 is taken with hashlib elsewhere)
    crc: Callable[[bytes, int], int] | None
    #: combine(crc_a, crc_b, len_b) -> crc of a + b, or None when not available
    combine: Callable[[int, int, int], int] | None = None

    @property
    def header(self) -> str:
        return f"x-amz-checksum-{self.s3_name.lower()}"

    @property
    def field(self) -> str:
        """The element of a multipart part (and of the completion's answer) that holds it."""
        return f"Checksum{self.s3_name}"

    def to_b64(self, value: int) -> str:
        return base64.b64encode(value.to_bytes(self.width, "big")).decode("ascii")

    def to_hex(self, value: int) -> str:
        return value.to_bytes(self.width, "big").hex()


_ALGORITHMS = {
    CRC64NVME: Algorithm(CRC64NVME, "CRC64NVME", 8,
                         (lambda d, p: _crt.crc64nvme(d, p)) if _crt else None,
                         _crt.combine_crc64nvme if _crt and hasattr(_crt, "combine_crc64nvme") else None),
    CRC32C: Algorithm(CRC32C, "CRC32C", 4, (lambda d, p: _crt.crc32c(d, p)) if _crt else None,
                      _crt.combine_crc32c if _crt and hasattr(_crt, "combine_crc32c") else None),
    CRC32: Algorithm(CRC32, "CRC32", 4, lambda d, p: zlib.crc32(d, p),
                     _crt.combine_crc32 if _crt and hasattr(_crt, "combine_crc32") else None),
    SHA256: Algorithm(SHA256, "SHA256", 32, None),
}
#: the algorithms read back from a store, in the order ``sync --checksum`` and ``verify`` prefer them:
#: the cheapest to compute first (CRC64NVME ~6 GB/s, SHA-256 ~1 GB/s, CRC32C, CRC32 ~2 GB/s: 32 bits)
READ_ORDER = (CRC64NVME, SHA256, CRC32C, CRC32)
#: the full-object checksum sent with every object written, or None when it cannot be computed here
WRITTEN: str | None = CRC64NVME if _ALGORITHMS[CRC64NVME].crc is not None else None


def algorithm(name: str) -> Algorithm:
    return _ALGORITHMS[name]


def computable(name: str) -> bool:
    """Whether this machine computes ``name`` (``crc64nvme`` and ``crc32c`` need awscrt)."""
    spec = _ALGORITHMS.get(name)
    return spec is not None and (spec.crc is not None or name == SHA256)


class Running:
    """A checksum taken over bytes as they pass: ``update`` then ``hexdigest`` (a hashlib-like object)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._spec = _ALGORITHMS[name]
        self._sha = hashlib.sha256() if name == SHA256 else None
        self.value = 0

    def update(self, data: bytes) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            assert self._spec.crc is not None
            self.value = self._spec.crc(data, self.value)

    def hexdigest(self) -> str:
        return self._sha.hexdigest() if self._sha is not None else self._spec.to_hex(self.value)


def digest(name: str, data: bytes) -> int:
    """The CRC ``name`` of ``data`` (an int; see :meth:`Algorithm.to_b64`)."""
    crc = _ALGORITHMS[name].crc
    assert crc is not None, f"{name} is not computed here"
    return crc(data, 0)


def b64_to_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def stored(headers: Mapping[str, str]) -> dict[str, str]:
    """The full-object checksums a HeadObject or GetObject answer gives (with checksum mode), as hex.

    A composite checksum (of the parts' checksums: ``value-N``, or type
    COMPOSITE) is no checksum of the bytes and is left out, as is a ranged
    answer's (S3 gives none for a range; a server that did would give the whole object's).
    """
    if (headers.get("x-amz-checksum-type") or "").upper() == "COMPOSITE":
        return {}
    out: dict[str, str] = {}
    for name in READ_ORDER:
        value = headers.get(_ALGORITHMS[name].header)
        if not value or "-" in value:
            continue
        hexed = b64_to_hex(value)
        if hexed is not None and len(hexed) == 2 * _ALGORITHMS[name].width:
            out[name] = hexed
    return out


def whole_check(headers: Mapping[str, str]) -> tuple[Running, str] | None:
    """(running checksum, expected hex) for the first stored full-object checksum this machine computes."""
    for name, value in stored(headers).items():
        if computable(name):
            return Running(name), value
    return None


#: error codes of a server that does not take a checksum header it was sent (AWS-compatible servers
#: answer InvalidArgument or InvalidRequest, OpenStack Swift 501 NotImplemented for CRC64NVME)
_REFUSALS = ("InvalidArgument", "InvalidRequest", "NotImplemented", "InvalidChecksum", "UnsupportedChecksum")


class Sending:
    """Whether one backend sends its full-object checksum: :data:`WRITTEN` until the server refuses it."""

    def __init__(self, enabled: bool = True) -> None:
        self.algorithm: str | None = WRITTEN if enabled else None

    def refused(self, status: int, code: str, message: str, *, backend: str) -> bool:
        """True (and no checksum is sent from now on) when an error answer refuses the checksum header.

        Only answers a checksum can cause: 400 or 501 with one of the codes
        above; an InvalidArgument only when its message names a checksum (it
        is also the answer to other bad arguments, which stay errors).
        """
        if self.algorithm is None or status not in (400, 501) or code not in _REFUSALS:
            return False
        text = message.lower()
        if code == "InvalidArgument" and "checksum" not in text and "crc" not in text:
            return False
        log.warning("s3.checksum_refused", backend=backend, algorithm=self.algorithm, code=code, message=message)
        self.algorithm = None
        return True

    def header(self, data: bytes) -> dict[str, str] | None:
        """The checksum header to send ``data`` with (``x-amz-checksum-crc64nvme``), or None."""
        if self.algorithm is None:
            return None
        spec = _ALGORITHMS[self.algorithm]
        return {spec.header: spec.to_b64(digest(self.algorithm, data))}

    async def send(self, header: Mapping[str, str] | None,
                   request: Callable[[Mapping[str, str] | None], Awaitable[T]], *, backend: str) -> T:
        """``request(header)``; refused for the header (:meth:`refused`), ``request(None)`` instead."""
        if header is None:
            return await request(None)
        try:
            return await request(header)
        except S3HTTPError as exc:
            if not self.refused(exc.status, exc.code, exc.message, backend=backend):
                raise
        return await request(None)


def echo_problem(sent: Mapping[str, str] | None, answer: Mapping[str, str]) -> str | None:
    """What is wrong when the answer to a write names another checksum than the one sent (None: nothing;
    a server that ignores the header answers none, which is not wrong)."""
    for header, value in (sent or {}).items():
        echoed = answer.get(header)
        if echoed and echoed != value:
            return f"server reports {header[len('x-amz-checksum-'):].upper()} {echoed}, sent {value}"
    return None


def hashes_of(sent: Mapping[str, str] | None) -> dict[str, str]:
    """The checksums in headers sent, as ``ObjectInfo.hashes`` holds them."""
    out = {}
    for name in READ_ORDER:
        value = (sent or {}).get(_ALGORITHMS[name].header)
        hexed = b64_to_hex(value) if value else None
        if hexed:
            out[name] = hexed
    return out


def describe_answer(headers: Mapping[str, Any]) -> dict[str, str]:
    """The checksum headers of an answer (for messages and logs)."""
    return {k: str(v) for k, v in headers.items() if k.lower().startswith("x-amz-checksum-")}
