"""Uploads a job's earlier run began and left: aborted by a later run of the job (``copy``/``sync``).

A run killed outright (SIGKILL, a power cut) leaves its multipart upload on
the store, billed, and its checkpoint in the journal (``uploads``), which
names the job (:class:`~vertexflow.state.journal.JournalCheckpoint`). The
next run of the job resumes it if it sends that object again; if it does not
(the object was copied meanwhile by another way, or no longer needs copying),
nothing would ever touch it again. So at the end of a run that was not
stopped, every upload the journal still holds for this job and this
destination is one no run is resuming: it is aborted, its checkpoint
dropped, each logged and counted (``orphan_uploads`` in the summary).

A run killed while an upload was being created left no upload id, only the
time it asked (``UPLOAD_CREATING``): the uploads of that key begun since then
(less the clock skew allowed) are the ones it left.

An upload the journal does not know (another tool's, another job's, one
begun before checkpoints named their job) is never touched: ``vertexflow
cleanup`` lists and aborts those on request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backends.base import CLOCK_SKEW, UPLOAD_CREATING, Backend
from ..errors import BackendError
from ..logs import get_logger
from ..model import IncompleteUpload
from ..pipeline.stats import JobStats
from ..state.journal import Journal

log = get_logger(__name__)


@dataclass(slots=True)
class OrphanUploads:
    """What :func:`abort_orphans` did: a reporter of the job's stats (``orphan_uploads``)."""

    aborted: list[str] = field(default_factory=list)
    #: key -> why the abort failed (its checkpoint stays, for the next run)
    not_aborted: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"aborted": len(self.aborted), "not_aborted": len(self.not_aborted),
                "keys": self.aborted[:20], "errors": dict(list(self.not_aborted.items())[:20])}

    def describe(self) -> str:
        text = f"{len(self.aborted):,} uploads an earlier run of this job left were aborted"
        if self.not_aborted:
            text += f"; {len(self.not_aborted):,} could not be (the next run tries again)"
        return text


async def abort_orphans(journal: Journal, dst: Backend, job_id: int, stats: JobStats) -> OrphanUploads | None:
    """Abort the uploads at ``dst`` the journal holds for job ``job_id`` (call once its transfers are over).

    None when there were none (nothing is added to ``stats``), or ``dst`` keeps no incomplete uploads.
    """
    if not dst.features.incomplete_uploads:
        return None
    dest = dst.describe()
    left = await journal.job_uploads(dest, job_id)
    if not left:
        return None
    report = OrphanUploads()
    for key, state in left:
        upload_id = str(state["upload_id"])
        try:
            if upload_id:
                await dst.abort_incomplete_upload(IncompleteUpload(key=key, upload_id=upload_id, initiated=None))
            elif isinstance(creating := state.get(UPLOAD_CREATING), (int, float)):
                await _abort_created_since(dst, key, float(creating))
        except BackendError as exc:
            if getattr(exc, "fatal", False):
                raise
            report.not_aborted[key] = str(exc)
            log.warning("orphan upload not aborted", key=key, upload_id=upload_id, error=str(exc))
            continue
        await journal.drop_upload(dest, key, upload_id=upload_id)
        report.aborted.append(key)
        log.warning("orphan upload aborted", key=key, upload_id=upload_id,
                 why="an earlier run of this job began it and no run resumes it")
    stats.reporters["orphan_uploads"] = report
    return report


async def _abort_created_since(dst: Backend, key: str, since: float) -> None:
    """Abort the uploads of ``key`` begun since ``since`` (less the clock skew): what a run killed while
    creating one left, its id never learnt."""
    async for upload in dst.list_incomplete_uploads(key):
        if upload.key == key and upload.initiated is not None and upload.initiated.timestamp() >= since - CLOCK_SKEW:
            log.warning("orphan upload aborted", key=key, upload_id=upload.upload_id,
                        why="a run of this job was stopped while it was being created")
            await dst.abort_incomplete_upload(upload)
