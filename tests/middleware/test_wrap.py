"""wrap(): the one place decorators are assembled, in a fixed order, and nothing when nothing is asked."""

from __future__ import annotations

from pathlib import Path

from vertexflow.backends.local import LocalBackend
from vertexflow.middleware.adaptive import AdaptiveBackend
from vertexflow.middleware.base import unwrap
from vertexflow.middleware.stages import TransformedBackend
from vertexflow.middleware.throttled import ThrottledBackend
from vertexflow.middleware.wrap import wrap
from vertexflow.ops.assembly import JobLayers
from vertexflow.ops.spec import TransferSettings
from vertexflow.pipeline.stats import JobStats
from vertexflow.throttle import Bandwidth
from vertexflow.transforms import Stages

from ..cli.helpers import vf

def test_nothing_asked_gives_the_backend_itself(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path)
    assert wrap(local) is local
    assert wrap(local, stages=Stages()) is local
    layers = JobLayers.build(TransferSettings(), transfers=8)
    stats = JobStats()
    assert layers.source(local, stats) is local and layers.destination(local, stats) is local  # local fast path kept
    assert stats.reporters == {}


def test_the_order_is_fixed(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path)
    stats = JobStats()
    out = wrap(local, stages=Stages.from_options(compress="zstd"), bandwidth=Bandwidth.from_options("1M"),
               adaptive=8, stats=stats)
    assert isinstance(out, TransformedBackend)
    assert isinstance(out.inner, ThrottledBackend)
    assert isinstance(out.inner.inner, AdaptiveBackend)
    assert out.inner.inner.inner is local and unwrap(out) is local
    assert set(stats.reporters) == {"transforms", "concurrency", "bwlimit"}
    assert not out.features.local_path and not out.features.sorted_listing


def test_a_dry_run_into_a_new_directory_through_stages(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    for extra in (["--compress", "zstd"], ["--bwlimit", "1M"]):
        r = vf("copy", str(tmp_path / "src"), str(tmp_path / "new"), "--dry-run", *extra)
        assert r.code == 0, r.err
        assert "copy a.txt" in r.out
    assert not (tmp_path / "new").exists()
