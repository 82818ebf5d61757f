"""Real block-queue knobs of the disk under the temp dir: switching the I/O scheduler resets the
queue's nr_requests, so a trial must re-check what it wrote and a restore must put back
nr_requests after the scheduler (both orders of the two parameters in a space)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Iterator, NamedTuple

import pytest

from storage.store import ResultStore
from targets.apps.mariadb import datadir_block_device
from spaces.loader import parse_space
from targets.hosts.local import LocalHost
from targets.knobs import family_for
from tests.helpers import ostune, query
from tuner.errors import ApplyError
from tuner.host_state import restore_entries

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes real sysfs knobs: needs root")

DEVICE = datadir_block_device(LocalHost(), tempfile.gettempdir())

# the measured "metric" is whether the kernel really holds the trial's nr_requests while it runs
CHECK = (
    f"{sys.executable} -c \"import json,os;"
    "p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
    f"a=int(open('/sys/block/{DEVICE}/queue/nr_requests').read());"
    "print(json.dumps({'p99_ms': 1.0, 'nr_match': float(a == p['q.nr_requests'])}))\""
)


def _read(name: str) -> str:
    text = open(f"/sys/block/{DEVICE}/queue/{name}").read().strip()
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text


def _space(order: list[str], schedulers: list[str]) -> str:
    params = {
        "q.scheduler": f"{{kind: sysfs, path: /sys/block/{DEVICE}/queue/scheduler, type: categorical, "
                       f"choices: [{', '.join(schedulers)}]}}",
        "q.nr_requests": f"{{kind: sysfs, path: /sys/block/{DEVICE}/queue/nr_requests, type: int, range: [40, 60]}}",
    }
    return "parameters:\n" + "".join(f"  {name}: {params[name]}\n" for name in order)


class DeepQueue(NamedTuple):
    elevator: str  # the disk's scheduler during the test: not `none`
    tag_depth: int
    nr_requests: str  # above the tag depth: what only an elevator takes


@pytest.fixture
def deep_queue() -> Iterator[DeepQueue]:
    """The disk under an elevator with nr_requests above its tag depth, as a host may be set up;
    its own scheduler and nr_requests put back afterwards."""
    if DEVICE is None:
        pytest.skip("the temp dir is not on a block device")
    available = open(f"/sys/block/{DEVICE}/queue/scheduler").read().replace("[", "").replace("]", "").split()
    original_scheduler, original_nr = _read("scheduler"), _read("nr_requests")
    elevators = [s for s in available if s != "none"]
    if "none" not in available or not elevators:
        pytest.skip(f"{DEVICE} offers no choice between `none` and an elevator")
    elevator = original_scheduler if original_scheduler != "none" else elevators[0]
    tag_depth = int(open(f"/sys/block/{DEVICE}/mq/0/nr_tags").read())
    queue = DeepQueue(elevator, tag_depth, str(tag_depth + 8))
    try:
        _write("scheduler", queue.elevator)
        _write("nr_requests", queue.nr_requests)
        yield queue
    finally:
        _write("scheduler", original_scheduler)
        _write("nr_requests", original_nr)


def _write(name: str, value: str) -> None:
    with open(f"/sys/block/{DEVICE}/queue/{name}", "w") as f:
        f.write(value)


@pytest.mark.skipif(DEVICE is None, reason="the temp dir is not on a block device")
@pytest.mark.parametrize("order", [["q.scheduler", "q.nr_requests"], ["q.nr_requests", "q.scheduler"]])
def test_scheduler_switch_does_not_undo_nr_requests(tmp_path, order):
    available = open(f"/sys/block/{DEVICE}/queue/scheduler").read().replace("[", "").replace("]", "").split()
    original_scheduler = _read("scheduler")
    others = [s for s in available if s != original_scheduler]
    if len(others) < 2:
        pytest.skip(f"{DEVICE} offers fewer than three I/O schedulers")
    original_nr = _read("nr_requests")
    # a non-default original: the scheduler switch of the restore would reset it to the default
    odd = "72" if original_nr != "72" else "88"
    with open(f"/sys/block/{DEVICE}/queue/nr_requests", "w") as f:
        f.write(odd)
    try:
        space = tmp_path / "q.yaml"
        space.write_text(_space(order, others[:2]))
        db = tmp_path / "q.db"
        result = ostune("run", "--app", "command", "--host", "local", "--space", str(space), "--command", CHECK,
                        "--trials", "4", "--seed", "3", "--repetitions", "1", "--no-warmup", "--db", f"sqlite:///{db}")
        assert result.returncode == 0, result.stderr
        assert (_read("scheduler"), _read("nr_requests")) == (original_scheduler, odd)
        rows = query(db, "select trial, status, source from trial_results where trial > 1")
        assert rows and all(status == "succeeded" for _, status, _ in rows), rows
        # while each optimizer trial ran, the kernel held the nr_requests the trial asked for
        matches = query(db, "select r.value from trial_metrics r where r.metric='nr_match' and r.trial > 1")
        assert matches and all(v == 1.0 for (v,) in matches)
    finally:
        with open(f"/sys/block/{DEVICE}/queue/scheduler", "w") as f:
            f.write(original_scheduler)
        with open(f"/sys/block/{DEVICE}/queue/nr_requests", "w") as f:
            f.write(original_nr)


def test_a_restore_puts_back_an_nr_requests_refused_until_the_scheduler_is_back(tmp_path, deep_queue):
    """With the scheduler `none` the kernel caps nr_requests at the disk's tag depth; with an
    elevator it takes more. A trial that set `none` left the restore (newest first) writing the
    original nr_requests before the scheduler: refused, and reported as a value not put back."""
    store = ResultStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    host = LocalHost()
    try:
        run_id = store.start_run(experiment_id=None, command="run", host_key=host.key, pid=1, pid_start_ticks=None,
                                 machine="m", boot_id="b", host_facts={})
        store.journal_originals(run_id, host.key, [  # in a space's order: the scheduler first
            (f"q.{name}", "sysfs", f"/sys/block/{DEVICE}/queue/{name}", _read(name))
            for name in ("scheduler", "nr_requests")])
        _write("scheduler", "none")  # what the trial set
        assert int(_read("nr_requests")) <= deep_queue.tag_depth
        failures = restore_entries(host, store, store.pending_journal([run_id]))
        assert failures == []
        assert (_read("scheduler"), _read("nr_requests")) == (deep_queue.elevator, deep_queue.nr_requests)
        assert store.pending_journal([run_id]) == []
    finally:
        store.close()


NR_REQUESTS_SPACE = "parameters:\n  q.nr_requests: {kind: sysfs, path: /sys/block/%s/queue/nr_requests, " \
                    "type: int, range: [40, 60]}\n" % DEVICE
NOT_PUT_BACK = "error: 1 kernel value(s) not put back (q.nr_requests): the host is left changed"


def test_a_run_that_cannot_put_a_value_back_says_so_and_exits_4(tmp_path, deep_queue):
    """Something else switched the disk's scheduler to `none` during the run (here: the workload
    itself), so the original nr_requests, above the tag depth, cannot be written back. The run
    ends with a one-line error naming the value and exit 4, and --json carries the failure: a
    nightly job must not report a host left changed as a good night."""
    deep = deep_queue.nr_requests
    space = tmp_path / "q.yaml"
    space.write_text(NR_REQUESTS_SPACE)
    command = f"echo none > /sys/block/{DEVICE}/queue/scheduler; echo '{{\"p99_ms\": 1.0}}'"
    db = tmp_path / "q.db"
    result = ostune("run", "--app", "command", "--host", "local", "--space", str(space), "--command", command,
                    "--trials", "2", "--seed", "3", "--repetitions", "1", "--no-warmup", "--json",
                    "--db", f"sqlite:///{db}")
    assert result.returncode == 4, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [NOT_PUT_BACK], result.stderr
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 4 and doc["trials_run"] == 2
    [failure] = doc["restore_failures"]
    assert failure.startswith(f"q.nr_requests: could not restore '{deep}': ") and "kernel refused" in failure
    # kept pending: once the scheduler is back, `ostune restore` puts the value back
    assert query(db, "select name from restore_journal where restored_at is null") == [("q.nr_requests",)]
    assert f"`ostune restore --db sqlite:///{db}` tries them again" in " ".join(result.stderr.split())
    still_refused = ostune("restore", "--db", f"sqlite:///{db}")
    assert still_refused.returncode == 4, still_refused.stdout + still_refused.stderr
    assert still_refused.stderr.strip() == NOT_PUT_BACK
    assert "restore failed: q.nr_requests" in still_refused.stdout and "not touched" not in still_refused.stdout
    _write("scheduler", deep_queue.elevator)
    again = ostune("restore", "--db", f"sqlite:///{db}")
    assert again.returncode == 0, again.stderr
    assert f"{LocalHost().key}: restored q.nr_requests = {deep}" in again.stdout, again.stdout
    assert "not touched" not in again.stdout
    assert _read("nr_requests") == deep
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]


def test_a_verify_that_cannot_put_a_value_back_says_so_and_exits_4(tmp_path, deep_queue):
    """As the run above, for `ostune verify`: its results are printed, then the value it could
    not put back, in one line, and exit 4."""
    space = tmp_path / "q.yaml"
    space.write_text(NR_REQUESTS_SPACE)
    flag = tmp_path / "switch-scheduler"
    # fewer requests, lower "p99": the optimizer's configurations beat the deep baseline
    command = (f"[ ! -e {flag} ] || echo none > /sys/block/{DEVICE}/queue/scheduler; {sys.executable} -c "
               f"\"print('{{\\\"p99_ms\\\": %s}}' % (int(open('/sys/block/{DEVICE}/queue/nr_requests').read()) / 50))\"")
    db = tmp_path / "q.db"
    tuned = ostune("run", "--app", "command", "--host", "local", "--space", str(space), "--command", command,
                   "--trials", "3", "--seed", "3", "--repetitions", "1", "--no-warmup", "--no-profiles",
                   "--experiment", "q", "--db", f"sqlite:///{db}")
    assert tuned.returncode == 0, tuned.stderr
    flag.touch()
    verified = ostune("verify", "q", "--rounds", "3", "--repetitions", "1", "--no-profiles", "--json",
                      "--db", f"sqlite:///{db}")
    assert verified.returncode == 4, verified.stderr
    assert verified.stderr.strip().splitlines()[-1] == NOT_PUT_BACK
    doc = json.loads(verified.stdout)
    # the results are there: the recommended configuration's (the baseline's deep nr_requests is
    # refused in every round that comes after the scheduler went to `none`, so it may have none)
    assert "recommended" in {r["label"] for r in doc["results"]}
    [failure] = doc["restore_failures"]
    assert failure.startswith(f"q.nr_requests: could not restore '{deep_queue.nr_requests}': kernel refused")
    assert query(db, "select status from verifications") == [("finished",)]


def test_an_nr_requests_refused_under_the_scheduler_none_says_why(deep_queue):
    """A trial failed with 'kernel refused 166 ... invalid value' and nothing else: under `none`
    the cap is the disk's tag depth, which the message now names; under an elevator the same
    value is taken."""
    param = parse_space(NR_REQUESTS_SPACE.replace("[40, 60]", "[32, 1024]"))["q.nr_requests"]
    host = LocalHost()
    family = family_for(param)
    too_deep = deep_queue.tag_depth + 8
    family.apply(host, param, too_deep)  # an elevator takes it
    _write("scheduler", "none")
    with pytest.raises(ApplyError) as refused:
        family.apply(host, param, too_deep)
    assert str(refused.value).endswith(
        f"(under the scheduler `none` the disk takes at most its tag depth, {deep_queue.tag_depth})"), refused.value
    family.apply(host, param, deep_queue.tag_depth)
    with pytest.raises(ApplyError) as other:  # a refusal with another cause is told as it was
        family.apply(host, parse_space(NR_REQUESTS_SPACE.replace("nr_requests", "read_ahead_kb"))["q.read_ahead_kb"],
                     -1)
    assert "tag depth" not in str(other.value)
