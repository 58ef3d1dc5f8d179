"""The checkpoint of a sweep: append-only Parquet part files, each written atomically.

The checkpoint of `results.parquet` is the folder `results.parquet.checkpoint/`:

    sweep.json                   fingerprint of the spec, so a resume cannot mix two sweeps
    points-000001.parquet        rows of finished points, one file per finished task
    accuracy-000001.parquet      accuracy rows, one per policy

A part is serialised in memory, written to a temporary file in the same
folder, flushed, fsynced and renamed into place, and then the folder is
fsynced. So a part on disk is always complete. A sweep killed at any
moment leaves whole parts and at most a temporary file, which is ignored
and removed on resume.

A write that fails (a full disk, a quota) removes its temporary file and
raises `CheckpointWriteError`. The parts already written stay valid, so
the sweep resumes from them once there is space.

One process at a time writes a checkpoint: `CheckpointStore.open` creates
`sweep.lock` with its process id and host, and `close` removes it. A lock
left by a process that no longer runs on this host is taken over. A lock
from another host is an error, because its process cannot be checked from
here.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

HEADER_NAME = "sweep.json"
LOCK_NAME = "sweep.lock"
_PART_PATTERN = re.compile(r"^(points|accuracy)-(\d{6,})\.parquet$")
_TEMPORARY_SUFFIX = ".tmp"
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked: written by another spec, or present without --resume."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint file failed; the parts written before are intact."""


def checkpoint_dir(output: str | Path) -> Path:
    """Return the checkpoint folder of an output file."""
    output = Path(output)
    return output.with_name(output.name + ".checkpoint")


def _write_all(handle, data: bytes) -> None:
    """Write every byte of `data` to the open file `handle` (the one write call of a part)."""
    handle.write(data)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}{_TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            _write_all(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in _SPACE_ERRNOS:
            reason = "no space left on the device" if error.errno == errno.ENOSPC else "the disk quota is exceeded"
            raise CheckpointWriteError(error.errno, f"cannot write {path}: {reason}; free space, then rerun with --resume "
                                       "(finished points are kept)") from error
        raise CheckpointWriteError(error.errno, f"cannot write {path}: {error.strerror or error}; fix the cause, then rerun with --resume") from error
    _fsync_directory(path.parent)


def _process_running(pid) -> bool:
    """True when a process with this id runs on this host (or the id cannot be checked)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise a DataFrame as one Parquet file in memory."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


class CheckpointStore:
    """The part files of one sweep; see the module docstring for the layout and guarantees."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self._next_sequence = 1
        self._locked = False

    def _lock(self) -> None:
        """Create the lock file, taking over one whose process is gone; raise CheckpointError while another run holds it."""
        path = self.directory / LOCK_NAME
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if holder.get("host") == owner["host"] and not _process_running(holder.get("pid")):
                    log.info("taking over the lock of checkpoint %s from process %s, which is gone", self.directory, holder.get("pid"))
                    path.unlink(missing_ok=True)
                    continue
                raise CheckpointError(
                    f"checkpoint {self.directory} is in use by process {holder.get('pid')} on host {holder.get('host')}; "
                    f"wait for that sweep to finish, or remove {path} if it no longer runs"
                ) from None
            with os.fdopen(descriptor, "w") as handle:
                json.dump(owner, handle)
            self._locked = True
            return
        raise CheckpointError(f"cannot lock checkpoint {self.directory}: {path} keeps coming back; another sweep is starting on it")

    def close(self) -> None:
        """Release the lock; the parts stay."""
        if self._locked:
            (self.directory / LOCK_NAME).unlink(missing_ok=True)
            self._locked = False

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @classmethod
    def open(cls, directory: str | Path, fingerprint: str, *, resume: bool, description: dict | None = None) -> CheckpointStore:
        """Create the checkpoint, or reopen it with `resume`; raise CheckpointError where that would mix sweeps."""
        store = cls(Path(directory), fingerprint)
        if (store.directory / HEADER_NAME).exists():
            store._reopen(resume)
        else:
            store._create(description or {})
        return store

    def _reopen(self, resume: bool) -> None:
        if not resume:
            raise CheckpointError(
                f"checkpoint {self.directory} exists from an earlier run; pass --resume (resume=True) to continue it, "
                "or remove the folder to start over"
            )
        stored = json.loads((self.directory / HEADER_NAME).read_text()).get("fingerprint")
        if stored != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {self.directory} belongs to a sweep with other points or settings (fingerprint {str(stored)[:12]}, "
                f"this spec {self.fingerprint[:12]}); use another output path, or remove the folder to start over"
            )
        self._lock()
        self._remove_temporaries()
        sequences = [int(m.group(2)) for m in map(_PART_PATTERN.match, os.listdir(self.directory)) if m]
        self._next_sequence = max(sequences, default=0) + 1

    def _create(self, description: dict) -> None:
        if any(self.directory.glob("*.parquet")):
            raise CheckpointError(f"folder {self.directory} contains Parquet files but no {HEADER_NAME}; remove it or use another output path")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._remove_temporaries()
        content = {"fingerprint": self.fingerprint, **description}
        try:
            write_atomically(self.directory / HEADER_NAME, json.dumps(content, indent=1, sort_keys=True, default=str).encode())
        except CheckpointWriteError:
            self.close()
            raise

    def _remove_temporaries(self) -> None:
        for path in self.directory.glob(f".*{_TEMPORARY_SUFFIX}"):
            log.info("removing unfinished temporary file %s", path)
            path.unlink(missing_ok=True)

    def _write_part(self, kind: str, rows: list[dict]) -> Path:
        path = self.directory / f"{kind}-{self._next_sequence:06d}.parquet"
        write_atomically(path, frame_to_parquet_bytes(pd.DataFrame(rows)))
        self._next_sequence += 1
        return path

    def write_points(self, rows: list[dict]) -> Path:
        """Store the rows of finished points as one new part."""
        return self._write_part("points", rows)

    def write_accuracy(self, rows: list[dict]) -> Path:
        """Store accuracy rows (one per policy) as one new part."""
        return self._write_part("accuracy", rows)

    def _read(self, kind: str, key: str) -> pd.DataFrame:
        parts = sorted(
            (int(m.group(2)), self.directory / m.group(0))
            for m in map(_PART_PATTERN.match, os.listdir(self.directory))
            if m and m.group(1) == kind
        )
        frames = [pd.read_parquet(path) for _, path in parts]
        frames = [frame for frame in frames if len(frame)]
        if not frames:
            return pd.DataFrame()
        combined = pd.concat(frames, ignore_index=True)
        # A point evaluated again (a retried failure) keeps its latest row.
        return combined.drop_duplicates(subset=key, keep="last").reset_index(drop=True)

    def read_points(self) -> pd.DataFrame:
        """Rows of every finished point, the latest row of each point id."""
        return self._read("points", "point_id")

    def read_accuracy(self) -> pd.DataFrame:
        """Accuracy rows, the latest of each policy."""
        return self._read("accuracy", "policy")
