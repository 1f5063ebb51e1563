"""Yandex.Disk backend (``yadisk:/path``, remote type ``yandex_disk``).

``api`` holds the wire types, ``client`` the HTTP client and its error
table, ``listing`` the sorted recursive walk, ``backend`` the contract.
"""

from .backend import DEFAULT_BASE_URL, YandexDiskBackend

__all__ = ["DEFAULT_BASE_URL", "YandexDiskBackend"]
