"""The Ray connection and storage: the only module that calls ray.init.

Paths may be local or URIs (s3://, gs://, file://); everything goes through pyarrow.fs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

# Defaults that make a local cluster quiet and Ray Train's report() cheap (RAY_NOTES.md).
_RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DEDUP_LOGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


_configured_address: str | None = None
_log_file: str | None = None
_file_handler: Any = None  # one logging.FileHandler for every Ray logger routed to _log_file


def send_logs_to(path: str | None) -> None:
    """Where Ray's own log lines go: `path` (a local file, e.g. <run dir>/logs/ray.log) instead of the
    terminal, and workers' output stays in Ray's session logs rather than echoed to the driver
    (log_to_driver=False); Ray Data's progress bars are off. None (the CLI's -v) leaves Ray as it is."""
    global _log_file
    _log_file = path


def use_address(address: str | None) -> None:
    """The cluster the next connect() joins (the CLI's --address). Nothing starts here: a verb connects
    only once its inputs are checked, so a user error never waits for (or leaves) a cluster."""
    global _configured_address
    _configured_address = address


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (or use_address's, or RAY_ADDRESS); otherwise start an embedded local cluster.
    Every stage calls this before its first Ray call; it is a no-op once connected."""
    import ray

    if ray.is_initialized():
        return
    for key, value in _RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    address = address or _configured_address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {}
    if _log_file:
        _route_logs(_log_file)
        kwargs.update(log_to_driver=False, configure_logging=False)
    # Workers import lmstack from the driver's environment; on a remote cluster the job's
    # working_dir/runtime_env provides it.
    if address:
        ray.init(address=address, **kwargs)
    else:
        _start_local(num_cpus, **kwargs)
    _configure_data()
    if _log_file:
        _route_logs(_log_file)  # again: importing Ray Data configured its own console handler


def _start_local(num_cpus: int | None, attempts: int = 3, **kwargs: Any) -> None:
    """Start the embedded cluster. Ray gives a raylet a fixed 30 s to register; a heavily loaded
    machine can miss that, and a second start then usually succeeds."""
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     runtime_env={"worker_process_setup_hook": "lmstack.runtime.quiet_without_dashboard"}, **kwargs)
            return
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for this
            if "timed out during startup" not in str(err) or attempt == attempts - 1:
                raise
            ray.shutdown()  # stops the processes this attempt started


def quiet_without_dashboard() -> None:
    """Worker setup on the embedded cluster. Without the dashboard there is no state API, and Train V2's
    PlacementGroupCleaner logs a warning every second of a run that it cannot query it (hundreds of lines
    per run, harmless: RAY_NOTES.md). Its real failures still log at ERROR."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
        logging.ERROR)


def _route_logs(path: str) -> None:
    """Move the console handlers of Ray's loggers ("ray", "ray.data", "ray.train", ...) to one file."""
    import logging

    if is_uri(path):
        return
    global _file_handler
    if _file_handler is None or _file_handler.baseFilename != os.path.abspath(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _file_handler = logging.FileHandler(path, encoding="utf-8")
        _file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _file_handler.setLevel(logging.INFO)  # Ray Data logs DEBUG to its own session file already
    to_file = _file_handler
    names = ["ray", "ray._private", *(n for n in list(logging.root.manager.loggerDict)
                                      if n.startswith("ray.") and n != "ray._private")]
    for name in names:
        logger = logging.getLogger(name)
        # Ray's console handlers are StreamHandlers (PlainRayHandler); its session file handlers stay.
        consoles = [h for h in logger.handlers
                    if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
        for h in consoles:
            logger.removeHandler(h)
        # ray.init(configure_logging=False) clears "ray"'s handlers: "ray._private" (ray.init's own lines,
        # e.g. the token-auth notice) keeps its own.
        if (consoles or name in ("ray", "ray._private")) and to_file not in logger.handlers:
            logger.addHandler(to_file)
            logger.propagate = False
    logging.getLogger("ray").setLevel(logging.INFO)


def _configure_data() -> None:
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = os.environ.get("LMSTACK_PROGRESS", "1") != "0" and _log_file is None
    ctx.execution_options.preserve_order = True  # deterministic outputs for a given input
    # Ray's default of 200 shuffle partitions costs seconds per groupby on a small cluster.
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ctx.default_hash_shuffle_parallelism = min(200, max(4, 4 * cpus))


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def makedirs(path: str) -> None:
    fs, p = filesystem(path)
    fs.create_dir(p, recursive=True)


def remove_dir(path: str) -> None:
    fs, p = filesystem(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory:
        fs.delete_dir(p)


def remove(path: str) -> None:
    """Delete a file or a directory tree if it is there."""
    fs, p = filesystem(path)
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif kind == pafs.FileType.File:
        fs.delete_file(p)


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def write_text(path: str, text: str) -> None:
    """Write atomically where the filesystem allows it (local: temp file + rename)."""
    fs, p = filesystem(path)
    fs.create_dir(os.path.dirname(p), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{p}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must not publish a file whose bytes are still in the page cache
        os.replace(tmp, p)
        _fsync_dir(os.path.dirname(p))
        return
    with fs.open_output_stream(p) as f:  # object stores publish on close
        f.write(text.encode("utf-8"))


def read_text(path: str) -> str:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def write_summary(run_dir: str, verb: str, figures: dict[str, Any], started: float) -> dict[str, Any]:
    """Every verb that produces something ends with DIR/summary.json."""
    summary = {"verb": verb, **figures, "wall_time_s": round(time.time() - started, 2)}
    write_json(join(run_dir, "summary.json"), summary)
    return summary


@contextlib.contextmanager
def local_dir(path: str) -> Iterator[str]:
    """A local directory with the contents of `path` (a temporary copy when it is a URI)."""
    if not is_uri(path):
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        fs, p = filesystem(path)
        pafs.copy_files(p, tmp, source_filesystem=fs)
        yield tmp


def fingerprint(obj: Any) -> str:
    """A stable short hash of a JSON-able value."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def publish_dir(staged: str, dest: str) -> None:
    """Move a fully written local directory to `dest`, replacing what was there, in one atomic step:
    the new directory is swapped with the old one by renameat2(RENAME_EXCHANGE) (Linux), so a reader, or
    a process killed at any instant, sees either the whole old directory or the whole new one. Where the
    exchange is unavailable (other OSes, some filesystems) the old one is renamed aside first (a crash
    between the two renames leaves it beside `dest` as .replaced-*, never deleted)."""
    import shutil

    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    incoming = tempfile.mkdtemp(prefix=".incoming-", dir=parent)
    os.rmdir(incoming)
    shutil.move(staged, incoming)  # same filesystem as dest from here on: the renames below are atomic
    _fsync_tree(incoming)
    prefix = f".replaced-{os.path.basename(dest)}-"
    old = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.rmdir(old)
    if not os.path.lexists(dest):
        os.replace(incoming, dest)
    elif _exchange(incoming, dest):
        os.replace(incoming, old)  # `incoming` now names the old directory
    else:
        os.replace(dest, old)
        os.replace(incoming, dest)
    _fsync_dir(parent)
    # A loader that resolved the old directory may still be opening its files: it is deleted only once a
    # grace period has passed since it was replaced (ctime: the rename), never under a reader's feet.
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if name.startswith(prefix) and path != old and time.time() - os.stat(path).st_ctime > _REPLACED_GRACE_S:
                shutil.rmtree(path, ignore_errors=True)


_REPLACED_GRACE_S = 600


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where not supported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    return False  # EINVAL/ENOSYS (filesystem or kernel without it): the caller falls back


def _fsync_tree(root: str) -> None:
    """Flush a staged directory's files before it is published, so a power loss after the rename does not
    publish empty files."""
    for base, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(base, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(base)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
