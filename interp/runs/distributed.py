"""Sharded work on a Ray cluster: actors that each load the model once and run jobs.

Interpretability sweeps are embarrassingly parallel over examples. The analyses cut their work
into deterministic jobs (a replay's batches, a patching run's examples) and give them to
:func:`run_jobs`; the actors hold one model each and run one job at a time; results come back
to the driver, which writes them where a single process would have written them. The driver
owns the run directory: workers never touch the filesystem, so the same code runs on a local
cluster and on one whose nodes share no disk.

Ray is an optional extra (``pip install interp[ray]``) and is imported only here, only when
``workers`` is asked for; without it nothing of Ray is imported or started.

Faults. A worker that dies mid-job is restarted by Ray (the model is loaded again) and the job
is retried on it (``max_task_retries``), so a killed worker changes nothing in the result. A
killed driver loses only the jobs in flight: what it wrote stays, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp.errors import InterpError

# A test sets this to a file path: the first worker job that finds the file missing creates it
# and kills its own process, as a crash or an OOM kill would (tests/faults).
KILL_ONCE_ENV = "INTERP_TEST_KILL_WORKER_ONCE"
RETRIES = 3


@dataclass(frozen=True)
class Workers:
    """How to spread work over a Ray cluster.

    ``n``: actors (each loads the model once). ``address``: None starts a local cluster limited
    to this machine (stopped again at the end); ``"auto"`` or ``"HOST:PORT"`` joins a running one
    (``ray start --head``, or under Slurm/Kubernetes). ``gpus``: GPUs per actor (fractions
    share one). ``threads``: torch CPU threads per actor (and Ray CPUs reserved for it)."""

    n: int
    address: str | None = None
    gpus: float = 0.0
    threads: int = 1

    def check(self, device: str) -> None:
        # Messages name the fields; the CLI shows them with their flags.
        """Refuse worker settings Ray cannot honour.

        Args:
            device: The torch device the work runs on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).

        Raises:
            InterpError: ``n`` or ``threads`` below 1, ``gpus`` negative, or no GPU per worker with
                a cuda device.
        """
        if self.n < 1:
            raise InterpError(f"workers must be at least 1 (got {self.n})")
        if self.threads < 1:
            raise InterpError(f"threads_per_worker must be at least 1 (got {self.threads})")
        if self.gpus < 0:
            raise InterpError(f"gpus_per_worker must not be negative (got {self.gpus})")
        if device.startswith("cuda") and self.gpus == 0:
            raise InterpError(
                "gpus_per_worker must be above 0 with device cuda (Ray gives an actor no GPU "
                "otherwise)"
            )

    def record(self, n_jobs: int) -> dict[str, Any]:
        """The manifest's account of how the work was spread (not part of the result).

        Args:
            n_jobs: Number of jobs the work was cut into.

        Returns:
            ``n``, ``address`` (``"local"`` when None), ``gpus_per_worker``,
            ``threads_per_worker`` and ``jobs``.
        """
        return {
            "n": self.n,
            "address": self.address or "local",
            "gpus_per_worker": self.gpus,
            "threads_per_worker": self.threads,
            "jobs": n_jobs,
        }


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InterpError(
            "workers need Ray, an optional extra: pip install 'interp[ray]'"
        ) from None
    return ray


def run_jobs(
    workers: Workers,
    model_spec: dict[str, Any],
    fn: Callable[..., Any],
    jobs: Sequence[tuple[int, tuple[Any, ...]]],
    on_result: Callable[[int, Any], None],
) -> None:
    """Run ``fn(model, *args)`` for every ``(key, args)`` of ``jobs`` on ``workers.n`` actors,
    each holding ``load_model(**model_spec)``; ``on_result(key, value)`` is called in this
    process as each job finishes (in completion order; keys say which).

    ``fn`` must be a module-level function (Ray sends it by reference) whose result is plain
    data or bytes. Jobs go to whichever actor is free, so the result of a job must not depend
    on the actor: each job is computed from its own inputs alone.

    Args:
        workers: How many actors, where, and with what resources.
        model_spec: Keyword arguments of :func:`interp.model.loading.load_model` for each
            actor's model.
        fn: Module-level function called as ``fn(model, *args)`` in an actor.
        jobs: ``(key, args)`` pairs; ``key`` identifies the job's result.
        on_result: Called as ``on_result(key, value)`` in this process, per finished job.

    Raises:
        InterpError: Ray is not installed, the cluster cannot be joined, or a worker failed
            after ``RETRIES`` retries.
    """
    if not jobs:
        return
    ray = _import_ray()
    started = _connect(ray, workers)
    actors: list[Any] = []
    try:
        options: dict[str, Any] = {
            "num_cpus": workers.threads,
            "num_gpus": workers.gpus,
            "max_restarts": RETRIES,
            "max_task_retries": RETRIES,
        }
        env = {k: os.environ[k] for k in (KILL_ONCE_ENV,) if k in os.environ}
        if env:
            options["runtime_env"] = {"env_vars": env}
        actor_cls = ray.remote(_Worker).options(**options)
        actors += [
            actor_cls.remote(model_spec, workers.threads) for _ in range(min(workers.n, len(jobs)))
        ]
        for key, value in _pool_results(ray, actors, fn, jobs):
            on_result(key, value)
    except ray.exceptions.RayError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InterpError(f"a Ray worker failed after {RETRIES} retries: {first}") from None
    finally:
        # Actors hold a model each (GPU memory on a shared cluster): release them now rather
        # than when this driver disconnects.
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


@contextlib.contextmanager
def connected(workers: Workers | None) -> Iterator[None]:
    """Join (or start) the cluster ``workers`` names and check it has what they ask for,
    before the caller creates or prints anything: a bad address, an unreachable one or a
    cluster without the GPUs or CPUs one worker needs is one InterpError, not a hang or a
    half-made output. ``run_jobs`` inside reuses the connection; a cluster started here is
    stopped on the way out. ``None``: nothing (no Ray).

    Args:
        workers: The worker settings; None does nothing.

    Yields:
        None, with the Ray connection open (for ``workers`` not None).

    Raises:
        InterpError: Ray is not installed, the address is malformed or unreachable, or the
            cluster lacks the GPUs or CPUs of one worker.
    """
    if workers is None:
        yield
        return
    ray = _import_ray()
    if workers.address is not None and not ray.is_initialized():
        check_address(workers.address)
    started = _connect(ray, workers)
    try:
        check_resources(workers, ray.cluster_resources())
        yield
    finally:
        if started:
            ray.shutdown()


def check_address(address: str, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that is well formed and accepts a TCP
    connection; ``auto`` is left to Ray. Ray itself retries an unreachable address for
    minutes, printing warnings as it goes.

    Args:
        address: ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` (port 1..65535; an
            IPv6 host may be bracketed).
        timeout: Seconds to wait for the TCP connection.

    Raises:
        InterpError: The address is malformed, or nothing accepts a connection there.
    """
    if address == "auto":
        return
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InterpError(
            f"--ray-address {address!r} is not HOST:PORT (or auto, or ray://HOST:PORT)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InterpError(f"cannot connect to Ray at {address}: {reason}") from None


def check_resources(workers: Workers, resources: dict[str, float]) -> None:
    """One worker must fit the cluster (more queue for it): else Ray waits for ever.

    Args:
        workers: The worker settings (``gpus`` and ``threads`` per worker are compared).
        resources: The cluster's resources as ``ray.cluster_resources()`` gives them
            (``"GPU"``, ``"CPU"`` counts).

    Raises:
        InterpError: One worker needs more GPUs or CPUs than the whole cluster has.
    """
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    if workers.gpus > gpus:
        raise InterpError(
            f"gpus_per_worker {workers.gpus:g}: the Ray cluster has {gpus:g} GPUs; use "
            "--gpus-per-worker 0 on a CPU-only cluster, or join one with GPUs (--ray-address)"
        )
    if workers.threads > cpus:
        raise InterpError(
            f"threads_per_worker {workers.threads}: the Ray cluster has {cpus:g} CPUs; ask "
            "for fewer threads per worker"
        )


def _pool_results(ray, actors, fn, jobs) -> Iterator[tuple[int, Any]]:
    """Keep every actor busy with one job; yield results as they finish."""
    pending: dict[Any, tuple[int, Any]] = {}
    queue = list(jobs)
    for actor in actors:
        if queue:
            key, args = queue.pop(0)
            pending[actor.run.remote(fn, args)] = (key, actor)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        key, actor = pending.pop(done[0])
        value = ray.get(done[0])
        if queue:
            nkey, args = queue.pop(0)
            pending[actor.run.remote(fn, args)] = (nkey, actor)
        yield key, value


def _connect(ray, workers: Workers) -> bool:
    """Join or start a cluster; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    # Ray 2.60 turns token authentication on for a fresh local cluster and says so on every
    # start; a cluster limited to this machine needs none.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": "ERROR",
    }
    try:
        if workers.address is None:
            ray.init(num_cpus=max(os.cpu_count() or 1, workers.n * workers.threads), **kwargs)
        else:
            ray.init(address=workers.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = workers.address or "a local cluster"
        raise InterpError(f"cannot connect to Ray at {where}: {first}") from None
    return True


class _Worker:
    """A Ray actor: one model, loaded once, then any number of jobs."""

    def __init__(self, model_spec: dict[str, Any], threads: int) -> None:
        import torch

        from interp.model.loading import load_model

        torch.set_num_threads(threads)
        torch.manual_seed(model_spec.get("seed", 0))
        self.model = load_model(**model_spec)

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        marker = os.environ.get(KILL_ONCE_ENV)
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()), encoding="utf-8")
            os._exit(1)  # as a crash would: no cleanup, no reply
        return fn(self.model, *args)


def single_process(workers: Workers | None, verb: str) -> None:
    """Refuse ``workers`` for a verb that runs in this process only.

    Every verb takes ``workers`` (one API shape); those that cannot spread their work say so
    instead of ignoring it.

    Args:
        workers: The Ray workers asked for, or None.
        verb: The verb's name, for the message (e.g. ``"train_sae"``).

    Raises:
        InterpError: ``workers`` is not None.
    """
    if workers is not None:
        raise InterpError(f"{verb} runs in this process only; leave workers out")
