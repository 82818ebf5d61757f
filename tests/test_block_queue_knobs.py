"""Real block-queue knobs of the disk under the temp dir: switching the I/O scheduler resets the
queue's nr_requests, so a trial must re-check what it wrote and a restore must put back
nr_requests after the scheduler (both orders of the two parameters in a space)."""

from __future__ import annotations

import os
import sys
import tempfile

import pytest

from targets.apps.mariadb import datadir_block_device
from targets.hosts.local import LocalHost
from tests.helpers import ostune, query

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
