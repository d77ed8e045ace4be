"""Helpers of the resilience and object-store tests: tiny settings, table keys, expected-vs-found lines,
the `serialgen` command line in a clean environment, and an S3 proxy that kills a driver inside a commit."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import yaml

from render_data import plan_items
from serialgen.storage import Lake

#: Small enough for 2 cores: 2 procedural characters x 2 poses x 1 view at 64 x 96, 2 samples.
TINY = {
    "assets": {"procedural_characters": 2, "motion_variants": 1},
    "render": {"poses_per_character": 2, "views_per_pose": 1, "width": 64, "height": 96, "samples": 2,
               "chunk_size": 1, "workers": 1},
    "composite": {"backgrounds_procedural": 2, "write_rows": 2},
    "ray": {"num_cpus": 2},
}

KEYS = {"renders": ("character_id", "pose_id", "view_id"), "standards": ("character_id",), "pairs": ("pair_id",)}


def table_keys(lake: Lake, table: str) -> list[tuple]:
    """Every row's key, duplicates included (a set would hide them)."""
    data = lake.read(table, columns=list(KEYS[table]))
    return list(zip(*(data.column(k).to_pylist() for k in KEYS[table])))


def planned_keys(lake: Lake, poses_per_character: int, views_per_pose: int, seed: int = 0) -> set[tuple]:
    """The (character, pose, view) keys the render stage plans for the lake's accepted characters and poses."""
    characters = sorted(k for (k,) in lake.keys("characters", filter="status = 'accepted'"))
    poses = sorted(k for (k,) in lake.keys("poses"))
    return {i.key for i in plan_items(characters, poses, poses_per_character, views_per_pose, seed)}


def show(title: str, counts: dict[str, tuple[object, object]]) -> None:
    """Print ``table: expected E, found F`` lines (run pytest with ``-s`` to see them)."""
    print(f"\n[{title}]")
    for name, (expected, found) in counts.items():
        print(f"  {name}: expected {expected}, found {found}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def ray_worker_pids(class_name: str) -> list[int]:
    """PIDs of the Ray workers running an actor of ``class_name`` (by process title) in the Ray this
    process started: its descendants only, never another session's processes on the same machine."""
    parents, titles = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                titles[int(entry)] = f.read().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items()
            if title.startswith("ray::") and class_name in title and ours(pid)]


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def cli_command(lake: str, config: Path, *args: str) -> list[str]:
    """``serialgen --lake LAKE --config CONFIG ARGS...`` as this interpreter runs it."""
    return [sys.executable, "-m", "serialgen.cli", "--lake", lake, "--config", str(config), *args]


def cli_env(prefect_api: str | None = None) -> dict[str, str]:
    """This environment without SERIALGEN_* and PREFECT_* variables (the config file and flags decide),
    analytics off: what a `serialgen` subprocess of a test runs with. With ``prefect_api`` the command uses that
    running Prefect server (the session's) instead of starting and stopping a temporary one of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERIALGEN_", "PREFECT_"))}
    api = {"PREFECT_API_URL": prefect_api} if prefect_api else {}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", **api}


#: The object Lance writes last in a commit (a conditional PUT): the new version's manifest.
MANIFEST = re.compile(r"/(?P<table>\w+)\.lance/_versions/\d+\.manifest$")


class CommitKillingProxy:
    """An HTTP proxy in front of an S3-compatible server that can SIGKILL a process inside a Lance commit.

    Lance commits a table version in three uploads: the new data files, a transaction file, then the
    manifest ``<table>.lance/_versions/<n>.manifest`` (a conditional PUT: the commit point). In
    :meth:`run_until_killed`, the PUT of the ``commit``-th distinct manifest of ``table`` seen since the proxy
    started (a retried PUT is not a new one) is not forwarded: the proxy SIGKILLs the process group first, so
    the writer dies with that commit's data uploaded and the commit never made. Everything else is forwarded.
    """

    def __init__(self, endpoint: str) -> None:
        target = urlparse(endpoint)
        self.target = (target.hostname, target.port)
        self.killed = threading.Event()
        self._manifests: defaultdict[str, set[str]] = defaultdict(set)
        self._plan: tuple[str, int, int] | None = None
        self._lock = threading.Lock()
        self._server = _ProxyServer(self)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def options(self, storage_options: Mapping[str, str]) -> dict[str, str]:
        """``storage_options`` with the endpoint replaced by this proxy."""
        return {**storage_options, "aws_endpoint": self.endpoint}

    def run_until_killed(self, command: list[str], table: str, commit: int, env: Mapping[str, str],
                         timeout: float = 300) -> None:
        """Run ``command`` (a `serialgen` command line, in its own process group, with ``env``) until this proxy
        SIGKILLs the group at the PUT of ``table``'s ``commit``-th manifest; fails if the command ends first."""
        proc = subprocess.Popen(command, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._plan = (table, commit, proc.pid)
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert self.killed.is_set(), f"{command[-1]} ended (exit {proc.returncode}) before {table} commit {commit}"

    def intercept(self, method: str, path: str) -> bool:
        """Count a manifest PUT; True (after the kill) when it is the planned one and must be dropped."""
        match = MANIFEST.search(urlparse(path).path)
        if method != "PUT" or match is None:
            return False
        with self._lock:
            seen = self._manifests[match["table"]]
            if match[0] in seen:
                return False
            seen.add(match[0])
            if self._plan is None or self._plan[:2] != (match["table"], len(seen)):
                return False
            os.killpg(self._plan[2], signal.SIGKILL)
            self._plan = None
            self.killed.set()
            return True

    def __enter__(self) -> CommitKillingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: CommitKillingProxy) -> None:
        super().__init__(("127.0.0.1", 0), _ForwardingHandler)
        self.proxy = proxy


class _ForwardingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def _forward(self) -> None:
        proxy = self.server.proxy
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.send_error(501, "chunked request bodies are not forwarded")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if proxy.intercept(self.command, self.path):
            self.close_connection = True          # the writer is dead: no answer, the commit never lands
            return
        upstream = http.client.HTTPConnection(*proxy.target, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=dict(self.headers))
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response_only(response.status, response.reason)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in ("transfer-encoding", "connection")]
        for name, value in headers:
            self.send_header(name, value)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@dataclass
class KilledInsideCommit:
    """What a table held when its writer died inside a commit, and how the rerun ended."""

    rows: int
    version: int | None
    uncommitted_files: set[str]
    rerun: subprocess.CompletedProcess


def kill_inside_commit_then_rerun(endpoint: str, lake: Lake, sections: Mapping, config: Path, stage: str,
                                  table: str, commit: int, prefect_api: str | None = None) -> KilledInsideCommit:
    """``serialgen STAGE`` on ``lake`` (an S3 lake at ``endpoint``) with ``sections`` written to ``config``, killed at
    ``table``'s ``commit``-th manifest PUT (:class:`CommitKillingProxy`), then run again to the end (both runs on
    the Prefect server at ``prefect_api`` when given, see :func:`cli_env`)."""
    with CommitKillingProxy(endpoint) as proxy:
        config.write_text(yaml.safe_dump({"storage_options": proxy.options(lake.storage_options), **sections}))
        command = cli_command(lake.uri, config, stage)
        proxy.run_until_killed(command, table, commit, cli_env(prefect_api))
        state = (lake.count(table), lake.version(table), uncommitted_data_files(lake, table))
        rerun = subprocess.run(command, env=cli_env(prefect_api), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return KilledInsideCommit(*state, rerun)


def uncommitted_data_files(lake: Lake, table: str) -> set[str]:
    """Data files of ``table`` in its S3 bucket that its current version does not reference: uploads of a
    commit whose manifest never landed (valid for a table that was never compacted)."""
    import boto3

    options = lake.storage_options
    client = boto3.client("s3", endpoint_url=options["aws_endpoint"], aws_access_key_id=options["aws_access_key_id"],
                          aws_secret_access_key=options["aws_secret_access_key"], region_name=options["aws_region"])
    uri = urlparse(lake.table_uri(table))
    prefix = f"{uri.path.strip('/')}/data/"
    listed = client.list_objects_v2(Bucket=uri.netloc, Prefix=prefix).get("Contents", [])
    stored = {o["Key"][len(prefix):] for o in listed}
    return stored - {f.path for fragment in lake.dataset(table).get_fragments() for f in fragment.data_files()}
