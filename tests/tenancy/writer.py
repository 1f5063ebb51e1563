"""The platform writer the tenancy tests use: it lives in :mod:`vertexflow.testing.platform_writer` (the chaos
harness drives it too); re-exported here under the names the tests import."""

from vertexflow.testing.platform_writer import MODULE, SUBFOLDERS, Writer, WriterResult, main

__all__ = ["MODULE", "SUBFOLDERS", "Writer", "WriterResult", "main"]

if __name__ == "__main__":
    main()
