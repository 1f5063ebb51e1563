"""Backup and restore of the platform: its SQLite database and its storage tree.

``create`` writes a backup folder (database copy, tar archive cut into
parts, MEMBERS.sha256, MEMBERS.jsonl, SHA256SUMS, metadata.json last);
``verify`` checks one; ``restore`` puts it back; ``catalog`` lists and prunes. The format and
the manual recipe are documented in docs/backup.md; :mod:`.metadata` holds
the layout.
"""
