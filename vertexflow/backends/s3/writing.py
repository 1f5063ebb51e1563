"""What an S3 backend gives every object it writes besides the bytes, and what it describes.

Four things go with an object written (``docs/fidelity.md``):

* its description (Content-Type, the standard headers, user metadata, the
  source mtime): carried from the source unless ``metadata`` is off, less
  ``metadata_exclude``, ``metadata_set`` on top, and the Content-Type of the
  first ``content_types`` glob that matches the key over all of it;
* its tags: the source's (``x-amz-tagging`` on the PutObject or
  CreateMultipartUpload, no request of their own), ``tags`` on top, checked
  against S3's limits before anything is sent;
* the storage class, server-side encryption and canned ACL the job asks
  for: they depend on the destination's account, so none is taken from the
  source; None leaves each to the store's default.

Reading, an answer that describes an object (HeadObject, GetObject) gives
its tags' count only (``x-amz-tagging-count``, absent when it has none): the
info carries :class:`~vertexflow.model.PendingTags`, read with one
GetObjectTagging by a destination that keeps tags, and by no other.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import botocore.exceptions as bce

from ...errors import BackendError, InvalidTags, SettingRefused
from ...filters import glob_to_regex
from ...model import ObjectInfo, PendingTags, tags_problem
from .common import X_ACL, X_SSE, X_SSE_KMS_KEY, X_STORAGE_CLASS, X_TAGGING, description_to_send
from .errors import S3HTTPError, error_code

if TYPE_CHECKING:
    from .backend import S3Backend

T = TypeVar("T")
#: the keyword arguments the backend takes for the job's write settings (Features.write_settings;
#: the names of vertexflow.ops.spec.WRITE_SETTINGS)
SETTINGS = ("storage_class", "sse", "sse_kms_key_id", "acl", "tags", "content_types", "metadata_exclude")

#: how many tags an object has, in a HeadObject or GetObject answer (absent: none)
TAG_COUNT = "x-amz-tagging-count"


@dataclass(frozen=True, slots=True)
class WriteSettings:
    """The settings one S3 backend writes objects with (the keyword arguments it was given)."""

    metadata: bool = True
    metadata_set: Mapping[str, str] = field(default_factory=dict)
    metadata_exclude: tuple[str, ...] = ()
    #: (glob on the key, Content-Type), the first that matches decides
    content_types: tuple[tuple[re.Pattern[str], str], ...] = ()
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    acl: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    #: the store keeps object tags (False for Google Cloud Storage's XML API: no tagging header is sent)
    tagging: bool = True

    @classmethod
    def of(cls, *, metadata: bool, metadata_set: Mapping[str, str] | None,
           metadata_exclude: tuple[str, ...] | list[str] | None, content_types: Any,
           storage_class: str | None, sse: str | None, sse_kms_key_id: str | None, acl: str | None,
           tags: Mapping[str, str] | None) -> WriteSettings:
        """The settings from the backend's keyword arguments (``content_types``: (glob, type) pairs)."""
        return cls(metadata=metadata, metadata_set=dict(metadata_set or {}),
                   metadata_exclude=tuple(n.lower() for n in metadata_exclude or ()),
                   content_types=tuple((glob_to_regex(p), t) for p, t in content_types or ()),
                   storage_class=storage_class, sse=sse, sse_kms_key_id=sse_kms_key_id, acl=acl,
                   tags=dict(tags or {}))

    # -- describing what is read ----------------------------------------------------

    def excludes(self, name: str) -> bool:
        """Whether the header or user metadata ``name`` is not carried (``metadata_exclude``)."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.metadata_exclude)

    def described(self, info: ObjectInfo, headers: Mapping[str, str],
                  read_tags: Callable[[], Awaitable[Mapping[str, str]]]) -> ObjectInfo:
        """``info`` (what an answer with ``headers`` describes) less what is not carried, its tags pending.

        With ``metadata`` off nothing of the source's is carried on, tags
        included: they are not even counted.
        """
        if self.metadata_exclude:
            info = replace(info, content_type=None if self.excludes("content-type") else info.content_type,
                           headers={n: v for n, v in (info.headers or {}).items() if not self.excludes(n)},
                           metadata={n: v for n, v in info.metadata.items() if not self.excludes(n)})
        try:
            count = int(headers.get(TAG_COUNT) or 0)
        except ValueError:
            count = 0
        return replace(info, tags=PendingTags(count, read_tags) if count > 0 and self.metadata and self.tagging else {})

    # -- writing ----------------------------------------------------------------------

    async def with_tags(self, info: ObjectInfo) -> ObjectInfo:
        """``info`` with its tags read where they are pending and carried (one request); dropped if not carried."""
        if not isinstance(info.tags, PendingTags):
            return info
        return replace(info, tags=dict(await info.tags.read()) if self.metadata else {})

    def content_type_for(self, key: str) -> str | None:
        """The Content-Type of the first ``content_types`` glob matching ``key``, if any."""
        return next((media for pattern, media in self.content_types if pattern.match(key)), None)

    def tags_to_write(self, info: ObjectInfo, backend: str) -> dict[str, str]:
        """The tags ``info`` is stored with: its own (if carried) and ``tags`` on top.

        Raises InvalidTags for tags S3 would refuse, before anything is sent.
        """
        if isinstance(info.tags, PendingTags):
            raise BackendError("tags not read before the write (WriteSettings.with_tags)", backend=backend,
                               key=info.key)
        tags = {**(info.tags if self.metadata else {}), **self.tags}
        problem = tags_problem(tags)
        if problem is not None:
            raise InvalidTags(f"the object's tags cannot be written: {problem}", backend=backend, key=info.key)
        return tags

    def headers(self, info: ObjectInfo, backend: str, *, tags: bool = True) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, user metadata but the SHA-256) to write ``info`` with; ``tags`` False: no tagging header.

        Raises InvalidTags for tags S3 would refuse.
        """
        headers, metadata = description_to_send(info, keep=self.metadata, overrides=self.metadata_set,
                                                exclude=self.excludes if self.metadata_exclude else None)
        media = self.content_type_for(info.key)
        if media is not None:
            headers["content-type"] = media
        headers.update(self.target_headers())
        if tags and self.tagging:
            tagging = self.tags_to_write(info, backend)
            if tagging:
                headers[X_TAGGING] = urlencode(tagging, quote_via=quote)
        return headers, metadata

    def target_headers(self) -> dict[str, str]:
        """What the destination keeps besides the description: storage class, encryption, ACL (those set)."""
        given = {X_STORAGE_CLASS: self.storage_class, X_SSE: self.sse, X_SSE_KMS_KEY: self.sse_kms_key_id,
                 X_ACL: self.acl}
        return {name: value for name, value in given.items() if value}

    # -- server-side copies -----------------------------------------------------------

    def replaces_description(self, key: str) -> bool:
        """A server-side copy of ``key`` is given its description anew (directive REPLACE, after a
        HeadObject of the source) instead of copying the source's."""
        return (not self.metadata or bool(self.metadata_set) or bool(self.metadata_exclude)
                or self.content_type_for(key) is not None)

    @property
    def replaces_tags(self) -> bool:
        """A server-side copy is given its tags anew (TaggingDirective REPLACE) instead of the source's."""
        return self.tagging and (not self.metadata or bool(self.tags))

    # -- refusals -----------------------------------------------------------------------

    async def guarded(self, request: Awaitable[T], *, backend: str, key: str) -> T:
        """Await a write; an answer refusing what every object is written with raises SettingRefused
        (the job stops), one refusing this object's tags InvalidTags; any other error as it is."""
        try:
            return await request
        except S3HTTPError as exc:
            refused = self._refusal(exc.code, exc.message, backend, key)
            if refused is None:
                raise
            raise refused from exc
        except bce.ClientError as exc:
            refused = self._refusal(error_code(exc) or "", str(exc), backend, key)
            if refused is None:
                raise
            raise refused from exc

    def _refusal(self, code: str, message: str, backend: str, key: str) -> BackendError | None:
        if code == "InvalidTag":
            return InvalidTags(f"the store refuses the object's tags: {code}: {message}", backend=backend, key=key)
        if code == "InvalidStorageClass":
            what = f"the storage class {self.storage_class or '(its default)'}"
        elif code == "AccessControlListNotSupported":
            what = f"the ACL {self.acl} (the bucket takes no ACLs)"
        elif code.startswith("KMS.") or code == "InvalidEncryptionAlgorithmError":
            what = f"the encryption {self.sse} with the KMS key {self.sse_kms_key_id or '(its default)'}"
        else:
            return None
        return SettingRefused(f"the destination refuses {what}: {code}: {message}", backend=backend, key=key)


def tag_reader(backend: S3Backend, key: str, full: str) -> Callable[[], Awaitable[Mapping[str, str]]]:
    """Reads the tags of ``key`` (``full`` in the bucket) of ``backend``: one GetObjectTagging, retried."""
    async def read() -> Mapping[str, str]:
        fast = await backend.fast_client()
        tags: Mapping[str, str] = await backend.call("GetObjectTagging", key, lambda: fast.get_tagging(full),
                                                     retry=True)
        return tags

    return read
