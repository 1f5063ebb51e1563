"""The platform's storage layer: storage config, companies, per-company routing, provisioning.

* :mod:`.storage_config`: the platform's ``storage_config.json`` (per content
  type a storage type; Yandex.Disk, MinIO and backup settings) plus named
  connections, read and written with validation.
* :mod:`.registry`: the company registry in the platform's SQLite database.
* :mod:`.adapters`: :class:`StorageAdapter`, the small file API over one backend.
* :mod:`.manager`: :class:`StorageManager`, which routes a company and a
  content type to an adapter (cached per company) and provisions folders.
* :mod:`.routing`: :class:`CompanyAdapter`, a company's adapter that follows
  the platform database (live migrations and switches made by any process).
* :mod:`.live_state`: the live-migration tables (routing generation, writes
  in flight, dirty keys, the write fence).
* :mod:`.dual_write`: the adapter a company uses during a live migration.
* :mod:`.blocking`: :class:`BlockingStorageManager`, the same file API as
  blocking calls for synchronous platform code (safe from several threads).

Company migration itself is a job: :mod:`vertexflow.ops.migrate`.
"""

from .adapters import StorageAdapter
from .blocking import BlockingStorageManager
from .manager import StorageManager
from .registry import Company, Registry, StorageConnection
from .storage_config import StorageConfig, load_storage_config, save_storage_config

__all__ = ["BlockingStorageManager", "Company", "Registry", "StorageAdapter", "StorageConfig", "StorageConnection", "StorageManager",
           "load_storage_config", "save_storage_config"]
