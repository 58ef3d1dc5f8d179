"""Executors: where the tasks of a sweep run, with results that do not depend on the choice.

Every executor takes a list of `Task`s (a module-level function and its
arguments) and yields `(task, result)` pairs as tasks finish, in any order.
The sweep engine writes each result to the checkpoint as it arrives, so an
executor that stops early loses at most the tasks still running.

- `InProcessExecutor`: runs tasks one after another in this process.
- `ProcessPoolExecutor`: a `concurrent.futures` pool of spawned processes.
  When a worker dies (killed, out of memory), the pool breaks. The executor
  then starts a new pool and submits again the tasks that had not
  finished, up to `max_restarts` times. Tasks that finished are not run
  again.
- `DaskExecutor`: `dask.distributed` on a `LocalCluster` it starts, or on
  the scheduler at `address`. The scheduler runs a task again on another
  worker when its worker dies, until the task has killed
  `distributed.scheduler.allowed-failures` workers (3 by default in
  distributed 2026.8). After that the task's result is a `TaskLost`, which
  the engine records as an error of its points.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

EXECUTOR_NAMES = ("local", "processes", "dask")


@dataclass(frozen=True)
class Task:
    """One unit of work: `function(*arguments)`, with a key unique within a sweep."""

    key: str
    function: Callable[..., Any]
    arguments: tuple


@dataclass(frozen=True)
class TaskLost:
    """The result of a task whose workers kept dying; `reason` is the scheduler's message."""

    reason: str


class WorkerCrashError(RuntimeError):
    """Workers died more often than the executor retries; finished points are in the checkpoint."""


class Executor:
    """Base class: `run(tasks)` yields (task, result) as tasks finish; `close()` releases workers."""

    name = "executor"
    workers = 1

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers; the executor cannot run tasks afterwards."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs every task in this process, in order."""

    name = "local"

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        for task in tasks:
            yield task, task.function(*task.arguments)


class ProcessPoolExecutor(Executor):
    """A pool of `workers` spawned processes that is restarted, with the unfinished tasks, when a worker dies."""

    name = "processes"

    def __init__(self, workers: int = 2, max_restarts: int = 3) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"invalid workers={workers!r}: give a positive number of processes")
        self.workers = workers
        self.max_restarts = max_restarts
        self.restarts = 0
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # Spawned workers start clean: forking a process that holds torch or numba threads can deadlock.
        return concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        remaining = {task.key: task for task in tasks}
        while remaining:
            if self._pool is None:
                self._pool = self._new_pool()
            futures = {self._pool.submit(task.function, *task.arguments): task for task in remaining.values()}
            try:
                for future in concurrent.futures.as_completed(futures):
                    task = futures[future]
                    result = future.result()
                    del remaining[task.key]
                    yield task, result
            except BrokenProcessPool as error:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
                self.restarts += 1
                if self.restarts > self.max_restarts:
                    raise WorkerCrashError(
                        f"a worker process died {self.restarts} times ({error}); the points finished so far are in the checkpoint, "
                        "so rerun with --resume, and look for a point that exhausts memory or crashes its process"
                    ) from error
                log.warning("a worker process died (%s); restarting the pool (restart %d of at most %d) with %d unfinished task(s)",
                            error, self.restarts, self.max_restarts, len(remaining))
            except BaseException:
                # Ctrl-C or a failed checkpoint write: stop the workers now instead of waiting for their tasks.
                self._terminate_pool()
                raise

    def _terminate_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # NOTE: `_processes` is private to concurrent.futures (Python 3.14 adds terminate_workers() for this).
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.terminate()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """Tasks on a `dask.distributed` cluster: a LocalCluster of `workers` one-thread processes, or the scheduler at `address`."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int = 2, threads_per_worker: int = 1) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as error:
            raise ValueError('the dask executor needs dask.distributed: pip install "dask[distributed]"') from error
        self._cluster = None
        if address:
            log.info("connecting to the Dask scheduler at %s", address)
            self._client = Client(address)
        else:
            log.info("starting a Dask LocalCluster of %d worker process(es), %d thread(s) each", workers, threads_per_worker)
            self._cluster = LocalCluster(
                n_workers=workers, threads_per_worker=threads_per_worker, processes=True, dashboard_address=None,
            )
            self._client = Client(self._cluster)
        self.workers = max(1, len(self._client.scheduler_info().get("workers", {})) or workers)

    @property
    def client(self):
        return self._client

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        futures = {}
        for task in tasks:
            future = self._client.submit(task.function, *task.arguments, key=task.key, pure=False)
            futures[future] = task
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except KilledWorker as error:
                    log.warning("task %s lost: its workers died (%s)", task.key, error)
                    result = TaskLost(f"KilledWorker: {error}")
                yield task, result
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def check_executor_choice(name: str, scheduler: str | None = None) -> None:
    """Raise ValueError for an unknown executor name, or a scheduler address given to another executor than dask."""
    if name not in EXECUTOR_NAMES:
        raise ValueError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTOR_NAMES)}")
    if scheduler and name != "dask":
        raise ValueError(f"a scheduler address applies to the dask executor only; pass --executor dask, not {name!r}")


def make_executor(name: str, *, workers: int = 2, scheduler: str | None = None) -> Executor:
    """Build the executor called `name` (local, processes or dask)."""
    check_executor_choice(name, scheduler)
    if name == "local":
        return InProcessExecutor()
    if name == "processes":
        return ProcessPoolExecutor(workers)
    return DaskExecutor(scheduler, workers)
