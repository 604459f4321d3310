"""Shards on Dask (issue 14): ``hcpsync.distributed.pull_shards`` on a real ``LocalCluster`` of worker
processes (nannies), pulling from moto's server through the fault proxy; a worker killed (SIGKILL)
mid-run; ``hcpsync pull --dask local:N`` end to end, and its usage errors.

Every test asserts the bytes on disk and counts GETs at the proxy.  The cluster of this module is
started once (its processes carry a marker in their environment: none is left after the module).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FAKE_ENV, det_bytes, fast_put, tree_files
from faultproxy import FaultProxy, Rule
from test_journal import wait_until
from test_journal import want_local as local

from hcpsync import Selection, TransferConfig
from hcpsync.errors import UsageError
from hcpsync.models import Absent, ChecksumCounts, Failure, PullReport
from hcpsync.shard import Shard

distributed = pytest.importorskip("distributed")
from hcpsync.distributed import ShardOutcome, merge, pull_shards  # noqa: E402

SUBJECTS = ("100206", "100307", "100408", "100610")
#: the environment variable that marks the processes this module starts
MARK = "HCPSYNC_DASK_TEST_MARK"


def release(files_per_subject: int = 5, size: int = 4000) -> dict[str, bytes]:
    """Four subjects of a few small files each (whole-object GETs)."""
    return {f"HCP_1200/{s}/T1w/f{i:02d}.nii": det_bytes(size + i, f"{s}-{i}")
            for s in SUBJECTS for i in range(files_per_subject)}


def marked_processes(mark: str) -> list[int]:
    """PIDs (other than this one) whose environment carries ``MARK=mark``; multiprocessing's resource
    tracker, this process's own helper for as long as it lives (it starts the worker processes), aside."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    b"multiprocessing.resource_tracker" not in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    """A LocalCluster of two one-thread worker processes, for the module; none of its processes left after."""
    mark = uuid.uuid4().hex
    os.environ[MARK] = mark  # inherited by the worker processes (and those a nanny restarts)
    try:
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as c:
            yield c
    finally:
        del os.environ[MARK]
    wait_until(lambda: not marked_processes(mark), timeout=20)


def gets(proxy: FaultProxy) -> list[str]:
    return [key for _, kind, key, _ in proxy.requests_log if kind == "get"]


def assert_complete(report: PullReport, tree: dict[str, bytes], dest: Path) -> None:
    assert report.ok, (report.failed, report.notes)
    assert report.planned_files == len(tree) and report.planned_bytes == sum(map(len, tree.values()))
    assert report.transferred_files + report.skipped_files == len(tree)
    # files a killed shard landed but had not recorded are checked again (hashed), then skipped
    assert report.transferred_files <= report.verified_files + report.unverified_files <= len(tree)
    assert report.dest == str(dest) and report.journal == str(dest / ".hcpsync" / "shards")
    assert tree_files(dest) == local(tree)


# -- the library ---------------------------------------------------------------------------------


def test_local_cluster_pulls_every_object_once(client: distributed.Client, bucket: str, tmp_path: Path,
                                               proxy: FaultProxy) -> None:
    tree = release()
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    seen: list[ShardOutcome] = []
    report = pull_shards(Selection(subjects=SUBJECTS, bucket=bucket), dest, client, endpoint_url=proxy.url,
                         on_shard=seen.append)
    assert_complete(report, tree, dest)
    assert report.transferred_files == len(tree) and report.skipped_files == 0
    assert sorted(gets(proxy)) == sorted(tree)  # every object once: none twice, none missing
    assert report.requests >= len(tree)
    assert sorted(o.shard.index for o in seen) == [0, 1] and {o.shard.count for o in seen} == {2}  # one per worker
    assert {o.worker for o in seen} <= set(client.scheduler_info()["workers"])
    assert sorted(p.name for p in (dest / ".hcpsync" / "shards").iterdir()) == ["0-of-2", "1-of-2"]
    # a second run: every shard skips what it has; nothing fetched again
    proxy.reset_counts()
    again = pull_shards(Selection(subjects=SUBJECTS, bucket=bucket), dest, client, endpoint_url=proxy.url, shards=4)
    assert_complete(again, tree, dest)
    assert gets(proxy) == [] and again.skipped_files == len(tree), (gets(proxy), again)


def test_a_saved_plan_is_pulled_by_key_with_no_listing(client: distributed.Client, bucket: str, tmp_path: Path,
                                                       proxy: FaultProxy) -> None:
    from hcpsync import api

    tree = release(files_per_subject=4)
    fast_put(bucket, tree)
    sel = Selection(subjects=SUBJECTS[:2], bucket=bucket)
    api.plan_sync(sel, endpoint_url=proxy.url, save=tmp_path / "plan.sqlite").close()
    proxy.reset_counts()
    dest = tmp_path / "d"
    report = pull_shards(tmp_path / "plan.sqlite", dest, client, shards=3, by="key", endpoint_url=proxy.url)
    mine = {k: v for k, v in tree.items() if k.split("/")[1] in SUBJECTS[:2]}
    assert_complete(report, mine, dest)
    assert proxy.counts.get("list", 0) == 0 and sorted(gets(proxy)) == sorted(mine)
    assert sorted(p.name for p in (dest / ".hcpsync" / "shards").iterdir()) == [f"{k}-of-3-by-key" for k in range(3)]
    # a plan in memory (a scratch file on this machine) is saved where every worker sees it first
    the_plan = api.plan_sync(sel, endpoint_url=proxy.url)
    proxy.reset_counts()
    report = pull_shards(the_plan, tmp_path / "e", client, endpoint_url=proxy.url)
    assert_complete(report, mine, tmp_path / "e")
    assert (tmp_path / "e" / ".hcpsync" / "plan.sqlite").is_file()
    the_plan.close()


def test_a_worker_killed_mid_shard_loses_nothing(client: distributed.Client, bucket: str, tmp_path: Path,
                                                 proxy: FaultProxy) -> None:
    """SIGKILL of the worker process running shard 0 once some of its files landed: Dask gives the
    task to a worker again, the shard resumes from its journal (what landed is skipped, not fetched
    again), and the merged report is complete."""
    tree = release(files_per_subject=6)
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    proxy.add_rule(Rule("delay", delay_seconds=0.15))  # one GET at a time per shard: ~2 s a shard
    shard0 = [k for k in local(tree) if k.split("/")[0] in Shard(0, 2).subjects(SUBJECTS)]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(pull_shards, Selection(subjects=SUBJECTS, bucket=bucket), dest, client,
                              endpoint_url=proxy.url, config=TransferConfig(concurrency=1))
        wait_until(lambda: sum((dest / k).is_file() for k in shard0) >= 3, timeout=30)
        victim = next(w for w, keys in client.processing().items() if any("-0-of-2-" in str(k) for k in keys))
        pid = client.run(os.getpid, workers=[victim])[victim]
        landed = sum((dest / k).is_file() for k in shard0)
        os.kill(pid, signal.SIGKILL)
        report = running.result(timeout=60)
    assert_complete(report, tree, dest)
    assert report.skipped_files >= landed  # resumed from its journal
    fetched = gets(proxy)
    assert set(fetched) == set(tree)
    assert len(fetched) <= len(tree) + 1  # at most the GET in flight when the worker died, again
    wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=30)  # the nanny restarted it


def test_failed_shards_become_failures_and_a_usage_error_of_all_raises(client: distributed.Client, bucket: str,
                                                                       tmp_path: Path, proxy: FaultProxy) -> None:
    # no such bucket: every shard fails the same way, not retried (no GET, a listing a subject): one usage error
    with pytest.raises(UsageError, match=r"every shard: 2 of 2"):
        pull_shards(Selection(subjects=SUBJECTS, bucket="no-such-bucket-here"), tmp_path / "d", client,
                    endpoint_url=proxy.url)
    assert proxy.counts.get("get", 0) == 0 and proxy.counts.get("list", 0) <= len(SUBJECTS)
    # one shard's subject is missing (a usage error of that shard alone): the other one is pulled
    tree = {k: v for k, v in release(2).items() if "/100206/" in k}
    fast_put(bucket, tree)
    report = pull_shards(Selection(subjects=("100206", "999999"), bucket=bucket), tmp_path / "e", client,
                         endpoint_url=proxy.url)
    assert not report.ok and [f.key for f in report.failed] == ["shard 1/2"], (report.failed, report.notes)
    assert "999999" in report.failed[0].reason and "--shard 1/2" in report.failed[0].reason
    assert report.transferred_files == len(tree) and tree_files(tmp_path / "e") == local(tree)


def test_merge_prefixes_notes_and_sums(tmp_path: Path) -> None:
    def rep(n: int, note: str) -> PullReport:
        return PullReport(planned_files=n, planned_bytes=10 * n, transferred_files=n, transferred_bytes=10 * n,
                          skipped_files=0, skipped_bytes=0, failed=(Failure("k", "why"),), elapsed=1.0, retries=1,
                          requests=n, notes=(note,), verified_files=n, dest=str(tmp_path))

    merged = merge([ShardOutcome(Shard(1, 3), rep(2, "b")), ShardOutcome(Shard(0, 3), rep(3, "a")),
                    ShardOutcome(Shard(2, 3), error="failed after 2 retries: boom")], str(tmp_path), 7.5)
    assert (merged.planned_files, merged.transferred_bytes, merged.requests, merged.retries) == (5, 50, 5, 2)
    assert merged.elapsed == 7.5 and merged.notes[:2] == ("shard 0/3: a", "shard 1/3: b")
    assert [f.key for f in merged.failed] == ["k", "k", "shard 2/3"]


def test_merge_sums_checksum_counts_and_joins_absent_files(tmp_path: Path) -> None:
    def rep(checksum: ChecksumCounts | None, absent: tuple[Absent, ...] | None) -> PullReport:
        return PullReport(planned_files=1, planned_bytes=1, transferred_files=0, transferred_bytes=0, skipped_files=1,
                          skipped_bytes=1, failed=(), elapsed=1.0, retries=0, requests=0, notes=(),
                          checksum=checksum, absent=absent)

    a, b = Absent("100206/T1w/a.nii", "100206", "3T_Structural_preproc"), Absent("100307/x", "100307", "p")
    merged = merge([ShardOutcome(Shard(0, 3), rep(ChecksumCounts(2, 20, 1, 0), (b,))),
                    ShardOutcome(Shard(1, 3), rep(ChecksumCounts(3, 30, 0, 1), (a, b))),
                    ShardOutcome(Shard(2, 3), rep(None, None))], str(tmp_path), 1.0)
    assert merged.checksum == ChecksumCounts(5, 50, 1, 1)
    assert merged.absent == (a, b)
    quiet = merge([ShardOutcome(Shard(0, 1), rep(None, None))], str(tmp_path), 1.0)
    assert quiet.checksum is None and quiet.absent is None


def test_every_shard_refused_for_space_is_a_usage_error(tmp_path: Path) -> None:
    """Each shard's message names its own bytes: all of one kind still makes exit 2, not 1."""
    refused = [ShardOutcome(Shard(k, 2), error=f"not enough space at /d: the plan needs {k + 1}.0 GiB more",
                            final=True, kind="InsufficientSpaceError") for k in range(2)]
    with pytest.raises(UsageError, match=r"shard 0/2: not enough space .* \(every shard: 2 of 2\)"):
        merge(refused, str(tmp_path), 1.0)
    mixed = [refused[0], ShardOutcome(Shard(1, 2), error="no such subject 1", final=True, kind="SelectionError")]
    assert len(merge(mixed, str(tmp_path), 1.0).failed) == 2  # two kinds: failures of the report (exit 1)


def test_checksum_on_dask_fetches_only_the_stale_file(client: distributed.Client, bucket: str, tmp_path: Path,
                                                      proxy: FaultProxy) -> None:
    """``checksum=True`` reaches every shard: a same-size stale file is found and fetched again,
    nothing else; the merged report says what was hashed."""
    tree = release(files_per_subject=2)
    fast_put(bucket, tree)
    dest = tmp_path / "d"
    assert pull_shards(Selection(subjects=SUBJECTS, bucket=bucket), dest, client, endpoint_url=proxy.url).ok
    stale = f"{SUBJECTS[2]}/T1w/f01.nii"
    (dest / stale).write_bytes(det_bytes(len(tree["HCP_1200/" + stale]), "stale"))
    proxy.reset_counts()
    report = pull_shards(Selection(subjects=SUBJECTS, bucket=bucket), dest, client, endpoint_url=proxy.url,
                         checksum=True)
    assert report.ok, report.failed
    assert [k for k in gets(proxy) if "/.xdlm/" not in k] == ["HCP_1200/" + stale]
    assert report.checksum is not None and report.checksum.differed == 1 and report.checksum.hashed >= 1
    assert tree_files(dest) == local(tree)


def test_bad_arguments_are_one_line_before_any_task(client: distributed.Client, tmp_path: Path) -> None:
    sel = Selection(subjects=SUBJECTS)
    cases = [({"shards": 0}, "at least 1"), ({"by": "folder"}, "--shard-by"), ({"retries": -1}, "retries"),
             ({"resources": {"gpu": 1}}, "no Dask worker declares the resource")]
    for kwargs, message in cases:
        with pytest.raises(UsageError, match=message):
            pull_shards(sel, tmp_path / "d", client, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no saved plan"):
        pull_shards(tmp_path / "nothing.sqlite", tmp_path / "d", client)
    assert not client.processing() or not any(client.processing().values())


# -- the command line ------------------------------------------------------------------------------


def hcpsync(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hcpsync", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **FAKE_ENV, **(env or {})})


def test_cli_dask_local_end_to_end(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    tree = release(files_per_subject=3)
    fast_put(bucket, tree)
    dest, mark = tmp_path / "d", uuid.uuid4().hex
    done = hcpsync("pull", *(f"--subject={s}" for s in SUBJECTS), "--bucket", bucket, "--endpoint-url", proxy.url,
                   "--dest", str(dest), "--dask", "local:2", "--json", env={MARK: mark})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["planned"]["files"] == len(tree) and report["transferred"]["files"] == len(tree)
    assert report["journal"] == str(dest / ".hcpsync" / "shards")
    assert sorted(gets(proxy)) == sorted(tree) and tree_files(dest) == local(tree)
    assert sorted(line.split(" done")[0] for line in done.stderr.splitlines() if " done on " in line) == \
        ["hcpsync: shard 0/2", "hcpsync: shard 1/2"]
    assert not marked_processes(mark)  # the command's cluster is gone with it
    status = json.loads(hcpsync("status", "--dest", str(dest), "--json").stdout)
    assert [(s["shard"], s["state"]) for s in status["shards"]] == [("0-of-2", "complete"), ("1-of-2", "complete")]


def test_cli_dask_interrupted_closes_its_cluster(bucket: str, tmp_path: Path, proxy: FaultProxy) -> None:
    tree = release(files_per_subject=4)
    fast_put(bucket, tree)
    proxy.add_rule(Rule("delay", delay_seconds=5))
    dest, mark = tmp_path / "d", uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "hcpsync", "pull", *(f"--subject={s}" for s in SUBJECTS), "--bucket",
                             bucket, "--endpoint-url", proxy.url, "--dest", str(dest), "--dask", "local:2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **FAKE_ENV, MARK: mark})
    wait_until(lambda: proxy.counts.get("get", 0) >= 2, timeout=60)  # both shards are fetching
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 20
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not marked_processes(mark)


@pytest.mark.parametrize(("extra", "message"), [
    (["--dask", "local:2", "--shard", "0/2"], "--dask runs every shard"),
    (["--dask", "local:2", "--journal", "j.sqlite"], "drop --journal PATH"),
    (["--shards", "3"], "--shards M goes with --dask"),
    (["--dask", "local:0"], "local:N needs 1 <= N"),
    (["--dask", "nowhere"], "expected a scheduler address"),
    (["--dask", "local:2", "--shards", "0"], "at least 1"),
])
def test_cli_dask_usage_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    done = hcpsync("pull", "--subject", "100307", "--dest", str(tmp_path / "d"), *extra, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "d").exists()


def test_cli_dask_without_distributed_says_what_to_install(tmp_path: Path) -> None:
    script = ("import sys; sys.modules['distributed'] = None\n"
              "from hcpsync.cli.main import main\n"
              f"sys.exit(main(['pull', '--subject', '100307', '--dest', {str(tmp_path / 'd')!r}, '--dask', 'local:2']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **FAKE_ENV})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == 'hcpsync: error: hcpsync\'s Dask support needs the dask extra: pip install "hcpsync[dask]"'


def test_shards_starting_at_once_on_a_fresh_destination_all_claim_it(tmp_path: Path) -> None:
    """Each shard records the destination's source (source.json) when none is: at once, through
    temporary files of their own (one shared name: a shard's rename took another's file away)."""
    from hcpsync.dest import claim_source, prepare_state_dir, read_source

    sel = Selection(subjects=SUBJECTS)
    for attempt in range(20):
        root = tmp_path / f"d{attempt}"
        prepare_state_dir(root.mkdir() or root)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(claim_source, [root] * 8, [sel] * 8))  # raises if any failed
        assert read_source(root) == {"bucket": sel.bucket, "release": sel.release}
        assert [p.name for p in (root / ".hcpsync").iterdir()] == ["source.json"]


def test_a_shard_that_fails_at_once_leaves_the_shared_state_of_a_fresh_destination(bucket: str, tmp_path: Path,
                                                                                   moto_url: str) -> None:
    """A plain pull that fails before planning removes the DEST/.hcpsync/ it created; a shard must
    not: the other shards, started at the same time, keep their journals and locks there."""
    from hcpsync import pull_sync
    from hcpsync.errors import SelectionError

    dest = tmp_path / "d"
    with pytest.raises(SelectionError):
        pull_sync(Selection(subjects=["999998", "999999"], bucket=bucket), dest, shard=Shard(1, 2), endpoint_url=moto_url)
    assert (dest / ".hcpsync" / "shards").is_dir()
