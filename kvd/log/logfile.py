"""The log's file: appends (short writes retried), fsync, and the everysec fsync thread.

Kept apart from the policy logic in kvd.log.wal so tests can hand the log a fake file that fails
on demand (disk full, I/O error) and a syncer that runs inline.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class LogFile:
    """An append-only file descriptor and its size. Tests swap in a fake that fails."""

    def __init__(self, path: Path, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self.path = path
        self.fd = os.open(path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.syncs = 0  # fdatasync calls (the everysec thread's too: an int += is atomic enough)

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            self.size += n
            view = view[n:]

    def sync(self) -> None:
        os.fdatasync(self.fd)
        self.syncs += 1

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def close(self) -> None:
        os.close(self.fd)


def sync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    """The everysec helper: fsyncs the log on request in its own thread, so the loop never
    waits for the disk. A failure is kept for the loop to pick up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held while syncing; the loop takes it to swap files
        self.error: OSError | None = None
        self._file: LogFile | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="kvd-fsync", daemon=True)
        self._thread.start()

    def retarget(self, file: LogFile) -> None:
        """Sync `file` from now on; returns once no sync of the old one is running."""
        with self.lock:
            self._file = file

    def request(self, file: LogFile) -> None:
        self._file = file
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            with self.lock:
                try:
                    if self._file is not None:
                        self._file.sync()
                except OSError as exc:
                    self.error = exc

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
