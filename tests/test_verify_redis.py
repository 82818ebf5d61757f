"""`ostune verify` on a real local Redis experiment: interleaved schedule, relative p99 with a
95% CI per configuration, stored, and the kernel left as it was."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from spaces.loader import load_space
from tests.helpers import ostune, query, snapshot

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writes real kernel knobs: needs root"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def _server_starts(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if "--version" not in line) if log.exists() else 0


def test_verify_reports_interleaved_relative_p99_with_ci_and_stores_it(tmp_path):
    space = load_space("redis-latency")
    before = snapshot(space)
    db = f"sqlite:///{tmp_path / 'v.db'}"
    # the experiment's own redis-server (a wrapper that logs each start): verify and a resumed run
    # must measure under it too, without being told again
    starts = tmp_path / "starts.log"
    wrapper = tmp_path / "my-redis-server"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {starts}\nexec {shutil.which('redis-server')} \"$@\"\n")
    wrapper.chmod(0o755)
    run = ostune("run", "--experiment", "rv", "--trials", "4", "--repetitions", "2", "--requests", "2000",
                 "--seed", "3", "--db", db, "--app-set", f"binary={wrapper}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    after_run = _server_starts(starts)
    assert after_run >= 1
    # the minimal change is measured too when the model already puts the improvement on fewer knobs
    choice = json.loads(ostune("best", "rv", "--db", db, "--json", cwd=tmp_path).stdout)
    result = ostune("verify", "rv", "--db", db, "--rounds", "3", "--repetitions", "1", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    after_verify = _server_starts(starts)
    assert after_verify > after_run
    resumed = ostune("run", "--experiment", "rv", "--trials", "1", "--repetitions", "1", "--requests", "2000",
                     "--db", db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _server_starts(starts) > after_verify
    out = result.stdout + result.stderr
    assert snapshot(space) == before
    # four trials of noisy p99 may leave the baseline the best configuration: then there is no
    # "recommended" to measure, and verify says so
    labels = ["baseline"] + ([] if choice["is_baseline"] else ["recommended"])
    labels += ["profile:latency-performance", "profile:network-latency"]
    labels += ["minimal"] if choice["minimal"] is not None else []
    assert choice["is_baseline"] == ("the recommended configuration is the baseline" in out)
    # configurations identical on this host (a profile's debugfs knobs cannot be set here) are
    # measured once, under the first name, and reported under both
    twins = dict(re.findall(r"(\S+) sets the same values as (\S+) on this host", out))
    measured = [label for label in labels if label not in twins]
    # the schedule: every configuration once per round, in an order that changes between rounds
    orders = [
        [label for label in measured for line in out.splitlines() if f"round {r} {label}:" in line]
        for r in (1, 2, 3)
    ]
    assert all(sorted(order) == sorted(measured) for order in orders), out
    samples = query(tmp_path / "v.db", "select round, position, label, metric, value from verification_samples "
                                       "where metric='p99_ms' order by round, position")
    assert len(samples) == 3 * len(measured) and all(v > 0 for *_, v in samples)
    per_round = [[s[2] for s in samples if s[0] == r] for r in (1, 2, 3)]
    assert len({tuple(order) for order in per_round}) > 1  # interleaved, not the same order each round
    results = query(tmp_path / "v.db", "select label, metric, samples, relative, ci_low, ci_high, established "
                                       "from verification_results where metric='p99_ms'")
    by_label = {r[0]: r for r in results}
    assert set(by_label) == set(labels)
    for label in labels[1:]:
        _, _, n, relative, low, high, established = by_label[label]
        assert n == 3 and low <= relative <= high
        assert established == (high < 1.0)
        assert f"{label}" in out and f"x{relative:.3f}" in out
    best = ostune("best", "rv", "--db", db, "--json")
    assert best.returncode == 0 and '"verified": ' in best.stdout
