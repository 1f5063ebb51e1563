"""vertexflow: move objects between local disk, S3-compatible stores and Yandex.Disk."""

__version__ = "0.1.0"
