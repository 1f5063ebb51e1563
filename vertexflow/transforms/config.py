"""What a user asks of the stages: which are on, in what order, and their settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..retry import RetryPolicy
from .compression import Codec, parse_codec
from .hashing import DEFAULT, parse_algorithms

STAGE_NAMES = ("hash", "compress", "chunk")
#: hash first (digests of the content), compress the whole stream (a better
#: ratio than per part), chunk last (parts of the stored size a backend limits).
DEFAULT_ORDER = STAGE_NAMES
DEFAULT_CODEC = "zstd:3"
#: 100 MiB parts: few enough requests, and under every backend's per-object limit.
DEFAULT_CHUNK_SIZE = 100 * 1024 * 1024
MIN_CHUNK_SIZE = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Stages:
    """The stages for one backend.

    Writing (to a destination): ``order`` lists the stages that are on, in
    the order the bytes pass them. Reading (from any backend):
    ``decompress``/``reassemble`` undo what compress/chunk did; a backend
    whose stages write compress or chunk also reads those forms back.

    ``hash_threads`` and ``compress_threads`` are each stage's concurrency
    (worker threads doing its CPU work; default: one per core). ``retry``
    retries a single chunk part. ``spill_dir`` holds parts of compressed
    streams while they are sent (default: the system temporary directory).
    """

    order: tuple[str, ...] = ()
    hashes: tuple[str, ...] = DEFAULT
    codec: Codec | None = None
    force_compress: bool = False
    chunk_size: int | None = None
    decompress: bool = False
    reassemble: bool = False
    hash_threads: int | None = None
    compress_threads: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    spill_dir: str | None = None

    @classmethod
    def from_options(cls, *, hashes: str | None = None, compress: str | None = None, chunk_size: int | None = None,
                     stages: str | None = None, **settings: object) -> Stages:
        """From command-line style options; ``stages`` orders them.

        A stage is on when its option is given (``hashes`` beyond SHA-256,
        ``compress``, ``chunk_size``) or when ``stages`` names it (then with
        its default: zstd:3, 100 MiB). A stage that is on must be named in
        ``stages`` when ``stages`` is given; the default order is hash,
        compress, chunk.
        """
        algorithms = parse_algorithms(hashes) if hashes else DEFAULT
        named = _parse_order(stages) if stages else None
        on = {"hash": algorithms != DEFAULT, "compress": compress is not None, "chunk": chunk_size is not None}
        if named is not None:
            missing = [n for n in STAGE_NAMES if on[n] and n not in named]
            if missing:
                raise ConfigError(f"--stages {stages!r} leaves out {', '.join(missing)}, which is on: name every "
                                  "stage in the order its bytes should pass")
            order = named
        else:
            order = tuple(n for n in DEFAULT_ORDER if on[n])
        if chunk_size is not None and chunk_size < MIN_CHUNK_SIZE:
            raise ConfigError(f"--chunk-size must be at least {MIN_CHUNK_SIZE} bytes")
        return cls(order=order, hashes=algorithms,
                   codec=parse_codec(compress or DEFAULT_CODEC) if "compress" in order else None,
                   chunk_size=(chunk_size or DEFAULT_CHUNK_SIZE) if "chunk" in order else None,
                   **settings)  # type: ignore[arg-type]

    @property
    def changes_bytes(self) -> bool:
        return "compress" in self.order or "chunk" in self.order

    @property
    def decodes_codecs(self) -> bool:
        return self.decompress or "compress" in self.order

    @property
    def decodes_chunks(self) -> bool:
        return self.reassemble or "chunk" in self.order

    @property
    def active(self) -> bool:
        return bool(self.order) or self.decompress or self.reassemble

    def describe(self) -> str:
        parts = []
        for name in self.order:
            if name == "hash":
                parts.append("hash " + "+".join(self.hashes))
            elif name == "compress":
                parts.append(f"compress {self.codec}{' forced' if self.force_compress else ''}")
            else:
                parts.append(f"chunk {self.chunk_size}")
        if self.decompress:
            parts.append("decompress")
        if self.reassemble:
            parts.append("reassemble")
        return ", ".join(parts)


def _parse_order(text: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown or len(set(names)) != len(names) or not names:
        raise ConfigError(f"--stages {text!r}: name each of {', '.join(STAGE_NAMES)} at most once, "
                          "in the order the bytes pass them, e.g. hash,compress,chunk")
    return names
