"""Persistence of artifacts and engine folders: atomic writes and hashing (io), the manifest, the integrity
check every consumer runs, staged publishing, folder and run locks, temp-file hygiene, OS-error wording and
cancellation (interrupts). Imports only ``pipeline.core`` and ``pipeline.graph``.
"""
