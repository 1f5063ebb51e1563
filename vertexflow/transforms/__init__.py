"""Transformer stages: hash, compress, chunk; and reading their results back.

The codecs only: the backend decorator that puts them in a copy's way is
:class:`vertexflow.middleware.stages.TransformedBackend`, and nothing here
imports a backend decorator.

Stages and how they compose
---------------------------

A destination can be given stages (:class:`~.config.Stages`). Each is on
when its option is given, or when ``--stages`` names it:

* ``hash`` (``--hash sha256,md5,blake3,xxh128``): digests the bytes that
  reach it, in-stream. SHA-256 of the content is always taken (the engine
  checks every copy with it); ``hash`` is a stage only when more is asked.
* ``compress`` (``--compress zstd:3`` or ``gzip:6``): ``key`` is stored as
  ``key.zst`` / ``key.gz``; content recognised as already compressed (JPEG,
  MP4, ZIP, ...) is stored as it is unless ``--compress-force``.
* ``chunk`` (``--chunk-size 100M``): a stream longer than that is stored as
  parts plus a JSON manifest under ``key.vfchunk/`` (:mod:`.chunking`).

The bytes pass the stages in the order ``--stages`` gives (default
``hash,compress,chunk``); every order round-trips byte for byte. What the
order changes:

* ``compress`` then ``chunk`` (default): the whole stream is compressed,
  then split: parts hold compressed bytes, at most ``--chunk-size`` each, so
  a backend's per-object limit is respected. Stored as
  ``key.zst.vfchunk/{manifest.json, <gen>-00000, ...}`` (or ``key.zst`` when
  the compressed stream fits in one part).
* ``chunk`` then ``compress``: the content is split, then each part is
  compressed on its own (parts ``<gen>-00000.zst``; a part may be skipped as
  already compressed). Decided by content size; each part independently
  decodable.
* ``hash`` digests the bytes at its place: first (default), the content,
  returned with the object (the journal records the SHA-256) and written to
  a manifest; after ``compress``, the compressed stream (written to the
  manifest as ``stream.hashes`` when chunked; otherwise compared with the
  digests the store reports, such as an S3 ETag's MD5); after ``chunk``,
  each part (written to the manifest per part).

Stored names and reading back
-----------------------------

A stored key says how to read it: ``K`` is stored as is; ``K.zst`` /
``K.gz`` is compressed; ``X.vfchunk/manifest.json`` is chunked object ``X``
(``X`` itself may end in ``.zst``: compressed, then chunked); other keys
under ``X.vfchunk/`` are parts and are not objects. To keep this
unambiguous, compress never stores as is a key that already ends in ``.zst``
or ``.gz`` (``a.gz`` becomes ``a.gz.zst``), and keys holding ``.vfchunk/``
are refused. Reading through a view with ``--decompress`` / ``--reassemble``
(or one that writes those stages) lists objects by their own keys and
streams their original bytes, verified; read with the stages you wrote with.

Objects stored with stages have no size or hashes in listings (their
content size is not known without reading them); the journal records what
was copied, so a repeated sync still skips unchanged objects.
"""

from __future__ import annotations

from .config import Stages
from .stages import TransformCounters

__all__ = ["Stages", "TransformCounters"]
