"""Relations, guards, shipped profiles, racing and `ostune verify`, end to end through the real
CLI with the command workload on the `none` host (what would be applied is what the command gets)."""

import json
import re
import sys

import pytest

from spaces.loader import parse_space
from tests.helpers import REPO, ostune, query
from tuner.optimizer import Observation, propose

# The command logs every configuration it receives, then prints metrics computed by FORMULA from
# the configuration `p` and a deterministic noise draw `z` (N(0,1), seeded by a call counter).
COMMAND = (
    f"{sys.executable} -c \"import json,os,sys,math,random;"
    "p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
    "log=os.environ['T_LOG'];n=sum(1 for _ in open(log)) if os.path.exists(log) else 0;"
    "open(log,'a').write(json.dumps(p)+chr(10));"
    "z=random.Random(n).gauss(0,1);"
    "print(json.dumps(eval(os.environ['T_FORMULA'])))\""
)


def run(tmp_path, space_text, formula, *extra, trials=20, experiment="e"):
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    env = {"T_LOG": str(tmp_path / f"{experiment}.log"), "T_FORMULA": formula}
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", COMMAND,
                    "--trials", str(trials), "--experiment", experiment, "--db", f"sqlite:///{tmp_path}/t.db",
                    "--seed", "5", "--repetitions", "1", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in (tmp_path / f"{experiment}.log").read_text().splitlines()]


RELATION_SPACE = """
parameters:
  vm.dirty_background_ratio: {kind: sysctl, type: int, range: [1, 50], default: 10}
  vm.dirty_ratio: {kind: sysctl, type: int, range: [1, 50], default: 20}
  x.noise: {kind: sysctl, type: float, range: [0.0, 1.0], default: 0.5}
relations:
  - vm.dirty_background_ratio < vm.dirty_ratio
"""


def test_relation_violating_configurations_are_never_applied(tmp_path):
    # The unconstrained optimum (background 50, ratio 1) violates the relation: the optimizer is
    # pushed against it all run long.
    formula = "{'p99_ms': (1 + (50 - p['vm.dirty_background_ratio']) / 10 + p['vm.dirty_ratio'] / 10) * math.exp(0.05 * z)}"
    received = run(tmp_path, RELATION_SPACE, formula, trials=25)
    assert len(received) == 25
    assert all(p["vm.dirty_background_ratio"] < p["vm.dirty_ratio"] for p in received), received
    # the search did go to the boundary (so the relation was binding, not trivially satisfied)
    assert min(p["vm.dirty_ratio"] - p["vm.dirty_background_ratio"] for p in received) <= 3
    rejects = query(tmp_path / "t.db", "select sum(json_extract(proposal_json, '$.relation_rejects')) from trials")
    assert rejects[0][0] is not None


def test_a_configuration_to_try_that_breaks_a_relation_is_refused_before_anything_is_applied(tmp_path):
    """--try is the user's own proposal: held to the space's relations like the optimizer's, either
    from its own values or together with the host's current values for the knobs it leaves out
    (the `none` host's are the space defaults: dirty_ratio 20)."""
    space = tmp_path / "space.yaml"
    space.write_text(RELATION_SPACE)
    env = {"T_LOG": str(tmp_path / "try.log"), "T_FORMULA": "{'p99_ms': 1.0}"}
    for tried, message in (
            ("vm.dirty_background_ratio=40,vm.dirty_ratio=10",
             "error: --try 'vm.dirty_background_ratio=40,vm.dirty_ratio=10' breaks the space's relation "
             "vm.dirty_background_ratio < vm.dirty_ratio; give values for which it holds"),
            ("vm.dirty_background_ratio=30",
             "error: --try 1 breaks the space's relation vm.dirty_background_ratio < vm.dirty_ratio: "
             "vm.dirty_background_ratio=30, vm.dirty_ratio=20 (the host's current value); give values for which it holds")):
        result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", COMMAND,
                        "--trials", "3", "--experiment", "t", "--db", f"sqlite:///{tmp_path}/t.db",
                        "--repetitions", "1", "--try", tried, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip() == message, result.stderr
        assert not (tmp_path / "try.log").exists()  # nothing was measured, not even the baseline
        assert not (tmp_path / "t.db").exists()
    # one that holds with the host's values runs
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", COMMAND,
                    "--trials", "2", "--experiment", "t", "--db", f"sqlite:///{tmp_path}/t.db",
                    "--repetitions", "1", "--try", "vm.dirty_background_ratio=19", env=env)
    assert result.returncode == 0, result.stderr
    assert query(tmp_path / "t.db", "select value from trial_params where trial = 2 and param = 'vm.dirty_background_ratio'") \
        == [(19,)]


def test_a_design_point_passed_over_for_a_relation_does_not_make_the_next_proposal_a_repeat():
    """The k-th proposal is the initial design's k-th point: one passed over for breaking a
    relation used to make the next proposal the point after it again, measured already (a wasted
    trial, and three early "measurements" of a random point)."""
    from tuner.racing import config_key

    space = parse_space(RELATION_SPACE.replace("range: [1, 50], default: 20", "range: [5, 80], default: 20"))
    for seed in range(1, 8):
        history = [Observation({"vm.dirty_background_ratio": 10, "vm.dirty_ratio": 20, "x.noise": 0.5},
                               "succeeded", 1.5, "baseline", 1)]
        for _ in range(10):
            proposal = propose(space, history, seed=seed, maximize=False, remaining=20)
            if proposal.source == "optimizer":
                assert config_key(space, proposal.params) not in {config_key(space, o.params) for o in history}, \
                    (seed, len(history), proposal.params)
            history.append(Observation(proposal.params, "succeeded", 1 + proposal.params["x.noise"], "optimizer",
                                       len(history) + 1))


def test_propose_never_returns_a_violating_configuration_for_many_seeds():
    space = parse_space(RELATION_SPACE)
    for seed in range(6):
        history = []
        for _ in range(14):
            p = propose(space, history, seed=seed, maximize=False).params
            assert p["vm.dirty_background_ratio"] < p["vm.dirty_ratio"]
            value = 1 + (50 - p["vm.dirty_background_ratio"]) / 10 + p["vm.dirty_ratio"] / 10
            history.append(Observation(p, "succeeded", value, "optimizer", len(history) + 1))


GUARD_SPACE = """
parameters:
  x.a: {kind: sysctl, type: int, range: [0, 20], default: 2}
  x.b: {kind: sysctl, type: float, range: [0.0, 1.0], default: 0.5}
"""
# Latency falls as x.a rises, but above 12 throughput collapses (e.g. busy polling starves the
# workers): the best latencies are behind a guard.
GUARD_FORMULA = ("{'p99_ms': (1 + (20 - p['x.a']) / 10) * math.exp(0.03 * z), "
                 "'ops_per_s': 1000.0 if p['x.a'] <= 12 else 600.0, 'errors': 0}")


def test_guard_violations_are_stored_infeasible_and_steer_proposals_away(tmp_path):
    guarded = run(tmp_path, GUARD_SPACE, GUARD_FORMULA, "--guard", "ops_per_s>=0.95*baseline",
                  "--guard", "errors==0", trials=24, experiment="guarded")
    free = run(tmp_path, GUARD_SPACE, GUARD_FORMULA, trials=24, experiment="free")
    db = tmp_path / "t.db"
    rows = query(db, "select trial, status, error, p99_ms from trial_results where experiment='guarded' order by trial")
    infeasible = [r for r in rows if r[1] == "infeasible"]
    assert infeasible, rows
    assert all("guard 'ops_per_s>=0.95*baseline' broken: ops_per_s = 600" in r[2] for r in infeasible)
    assert all(r[3] is not None for r in infeasible)  # the measurement is kept
    assert {r[1] for r in rows} <= {"succeeded", "infeasible"}
    # Where the model goes in the second half: the unguarded run crowds the fast, low-throughput
    # region; the guarded one learns it is infeasible and stays out (mostly).
    late_free = sum(p["x.a"] > 12 for p in free[12:])
    late_guarded = sum(p["x.a"] > 12 for p in guarded[12:])
    assert late_free >= 8, free
    assert late_guarded <= 3, guarded
    best = json.loads(ostune("best", "guarded", "--db", f"sqlite:///{db}", "--json").stdout)
    assert best["params"]["x.a"] <= 12


def test_a_bad_guard_is_one_line_and_stores_nothing(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(GUARD_SPACE)
    db = tmp_path / "g.db"
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", "true",
                    "--db", f"sqlite:///{db}", "--guard", "ops_per_s >= lots")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--guard 'ops_per_s >= lots'" in result.stderr
    assert not db.exists()


def test_a_guard_on_a_metric_the_workload_does_not_report_stops_the_run_keeping_the_baseline(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(GUARD_SPACE)
    db = tmp_path / "g.db"
    env = {"T_LOG": str(tmp_path / "g.log"), "T_FORMULA": GUARD_FORMULA}

    def run_with(*guards, trials=4):
        return ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", COMMAND,
                      "--trials", str(trials), "--db", f"sqlite:///{db}", "--experiment", "g", "--repetitions", "1",
                      "--no-profiles", *[arg for g in guards for arg in ("--guard", g)], env=env)

    # Every trial would be infeasible: the run stops after the baseline shows what is reported
    result = run_with("ops_per_s>=0.9*baseline", "eror==0")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip()
    assert error.count("\n") == 0 and error.startswith("error: --guard 'eror==0': the workload does not report eror")
    assert "errors" in error and "ops_per_s" in error  # what it does report, to pick from
    assert query(db, "select trial, status, source from trial_results") == [(1, "succeeded", "baseline")]
    # a resumed run with the same mistake measures nothing more
    assert run_with("eror==0").returncode == 2
    assert query(db, "select count(*) from trials") == [(1,)]
    # and with the guard spelt right the experiment goes on from its baseline
    assert run_with("errors==0", trials=2).returncode == 0
    assert query(db, "select trial, source from trial_results") == [(1, "baseline"), (2, "optimizer"), (3, "optimizer")]


PROFILE_SPACE = """
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  net.core.busy_read: {kind: sysctl, type: int, range: [0, 100], default: 0}
  transparent_hugepage.enabled:
    kind: sysfs
    path: /sys/kernel/mm/transparent_hugepage/enabled
    type: categorical
    choices: [always, madvise, never]
    default: always
"""


def test_shipped_profiles_are_measured_right_after_the_baseline(tmp_path):
    formula = "{'p99_ms': 1 + p['vm.swappiness'] / 100 + 0.01 * z}"
    received = run(tmp_path, PROFILE_SPACE, formula, trials=4)
    rows = query(tmp_path / "t.db", "select trial, source from trial_results order by trial")
    assert [r[1] for r in rows[:3]] == ["baseline", "profile:latency-performance", "profile:network-latency"]
    assert received[0] == {"vm.swappiness": 60, "net.core.busy_read": 0, "transparent_hugepage.enabled": "always"}
    # latency-performance sets only swappiness of these; network-latency includes it and adds the rest
    assert received[1] == {"vm.swappiness": 10, "net.core.busy_read": 0, "transparent_hugepage.enabled": "always"}
    assert received[2] == {"vm.swappiness": 10, "net.core.busy_read": 50, "transparent_hugepage.enabled": "never"}


def test_no_profiles_skips_them(tmp_path):
    run(tmp_path, PROFILE_SPACE, "{'p99_ms': 1 + 0.01 * z}", "--no-profiles", trials=3)
    sources = [r[0] for r in query(tmp_path / "t.db", "select source from trial_results order by trial")]
    assert not any(s.startswith("profile:") for s in sources)


VERIFY_SPACE = """
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  x.a: {kind: sysctl, type: int, range: [0, 10], default: 2}
"""


def readme_queries() -> list[str]:
    """The numbered example queries of the README's result-database section."""
    text = (REPO / "README.md").read_text()
    block = text.split("Six queries:", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    parts = re.split(r"^-- \d+\..*$", block, flags=re.M)
    return [p.strip() for p in parts if p.strip()]


def test_verify_interleaves_stores_and_establishes_a_real_improvement(tmp_path):
    # x.a >= 5 halves p99 (2% noise); swappiness does nothing. At 2% noise 14 trials show the
    # model swappiness's lack of effect clearly enough for a minimal change in 5 of 6 seeds
    # (measured; at 5% in 1 of 6 once the two profiles became one trial on this space).
    formula = "{'p99_ms': (0.5 if p['x.a'] >= 5 else 1.0) * math.exp(0.02 * z), 'p999_ms': 2.0}"
    run(tmp_path, VERIFY_SPACE, formula, trials=14)
    db = f"sqlite:///{tmp_path}/t.db"
    best = json.loads(ostune("best", "e", "--db", db, "--json").stdout)
    assert best["params"]["x.a"] >= 5 and best["measurements"] >= 3 and best["verified"] is False
    # the model puts the improvement on x.a alone: the minimal change leaves swappiness as it is
    assert best["params"]["vm.swappiness"] != 60
    assert best["minimal"]["kept"] == ["x.a"] and best["minimal"]["reverted"] == ["vm.swappiness"]
    assert best["minimal"]["params"] == {"x.a": best["params"]["x.a"]} and best["minimal"]["verified"] is False
    env = {"T_LOG": str(tmp_path / "verify.log"), "T_FORMULA": formula}
    result = ostune("verify", "e", "--db", db, "--rounds", "4", "--repetitions", "1", "--seed", "2", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for r in range(1, 5):
        assert f"round {r}: " in out
    assert "profile:latency-performance" in out  # the shipped profile that sets swappiness
    recommended = next(line for line in out.splitlines() if line.startswith("recommended") and "p99_ms" in line)
    assert "improvement established" in recommended
    assert query(tmp_path / "t.db", "select count(*) from verification_samples where metric='p99_ms'") == [(16,)]  # baseline, recommended, minimal, 1 profile x 4 rounds (network-latency is latency-performance on this space)
    # the minimal change was measured as what it is: recommended's x.a on the host's swappiness
    measured = [json.loads(line) for line in (tmp_path / "verify.log").read_text().splitlines()]
    assert {"vm.swappiness": 60, "x.a": best["params"]["x.a"]} in measured
    rows = query(tmp_path / "t.db", "select label, relative, ci_low, ci_high, established from verification_results "
                                    "where metric='p99_ms' order by id")
    by_label = {r[0]: r for r in rows}
    assert by_label["recommended"][1] == pytest.approx(0.5, rel=0.1) and by_label["recommended"][4] == 1
    assert by_label["minimal"][1] == pytest.approx(0.5, rel=0.1) and by_label["minimal"][4] == 1
    assert by_label["profile:latency-performance"][4] == 0  # swappiness 10 changes nothing here
    # the same, by experiment name, through the view for SQL users
    view = query(tmp_path / "t.db", "select configuration, relative, ci_low, ci_high, established, rounds "
                                    "from verification_summary where experiment = 'e' and metric = 'p99_ms'")
    assert {r[0]: r[1:5] for r in view} == {label: r[1:] for label, r in by_label.items()}
    assert {r[5] for r in view} == {4}
    schedule = json.loads(query(tmp_path / "t.db", "select schedule_json from verifications")[0][0])
    assert len(schedule) == 4 and all(len(r) == 4 for r in schedule)
    # the README's queries for SQL users run on this database; the last one names what survived
    answers = [query(tmp_path / "t.db", sql) for sql in readme_queries()]
    assert len(answers) == 6 and [row[0] for row in answers[4]] == ["e"]
    assert sorted((row[0], row[1], row[2]) for row in answers[-1]) == [("e", "minimal", "p99_ms"),
                                                                       ("e", "recommended", "p99_ms")]
    best = json.loads(ostune("best", "e", "--db", db, "--json").stdout)
    assert best["verified"] is True and "verified" in best["reason"] and best["minimal"]["verified"] is True
    # the list of experiments says which have a verified recommendation, and by how much
    listed = [line.split() for line in ostune("experiments", "--db", db).stdout.splitlines()]
    header = next(row for row in listed if row[0] == "experiment")
    assert "verified" in header and "trial" in header  # "best trial": the lowest single trial, not the recommendation
    row = next(row for row in listed if row[0] == "e")
    assert row[row.index("yes") + 1] == f"x{by_label['recommended'][1]:.3f}", row
    # for deployment: only x.a, marked verified
    lines = ostune("best", "e", "--db", db, "--minimal").stdout.splitlines()
    assert lines[1:] == [f"x.a = {best['params']['x.a']}"] and "verified: p99_ms x0." in lines[0]
    exported = ostune("export", "e", "--db", db, "--format", "tuned", "--minimal", "--output", str(tmp_path / "prof"))
    assert exported.returncode == 0, exported.stderr
    conf = (tmp_path / "prof" / "tuned.conf").read_text()
    assert f"[sysctl]\nx.a={best['params']['x.a']}\n" in conf and "swappiness" not in conf
    # and the HTML report names it, with its verification
    assert ostune("report", "e", "--db", db, "--output", str(tmp_path / "r.html")).returncode == 0
    html = (tmp_path / "r.html").read_text()
    assert "<h2>Minimal change</h2>" in html and f"<code>x.a = {best['params']['x.a']}</code>" in html
    assert "(vm.swappiness) can keep the host's values (verified: p99_ms x0." in html


def test_the_experiments_list_does_not_call_a_recommendation_verified_that_verify_never_measured(tmp_path):
    """Trials after a verify can move the recommendation to a configuration it did not measure;
    the list showed the old configuration's "yes" next to it (a nightly job deploying from it
    would deploy an unverified configuration)."""
    formula = "{'p99_ms': (1 + abs(p['x.a'] - 7) / 5 + abs(p['vm.swappiness'] - 37) / 50) * math.exp(0.01 * z)}"
    run(tmp_path, VERIFY_SPACE, formula, trials=6)
    db = f"sqlite:///{tmp_path}/t.db"
    verified = ostune("verify", "e", "--db", db, "--rounds", "3", "--repetitions", "1", "--no-profiles",
                      env={"T_LOG": str(tmp_path / "v.log"), "T_FORMULA": formula})
    assert verified.returncode == 0, verified.stderr
    before = json.loads(ostune("best", "e", "--db", db, "--json").stdout)
    assert before["verification"] is not None
    # the optimum, measured three times: the recommendation now
    run(tmp_path, VERIFY_SPACE, formula, *["--try", "vm.swappiness=37,x.a=7"] * 3, "--no-profiles", trials=3)
    after = json.loads(ostune("best", "e", "--db", db, "--json").stdout)
    assert after["params"] == {"vm.swappiness": 37, "x.a": 7} != before["params"]
    assert after["verified"] is False and after["verification"] is None
    row = next(line for line in ostune("experiments", "--db", db).stdout.splitlines() if line.split()[0] == "e")
    assert f"- (trial {after['trial']} not verified)" in row, row
    assert "yes" not in row.split() and "no" not in row.split(), row


def test_verify_does_not_certify_an_unchanged_configuration(tmp_path):
    formula = "{'p99_ms': math.exp(0.2 * z)}"  # nothing matters: 20% noise, like Redis p99
    run(tmp_path, VERIFY_SPACE, formula, trials=12)
    db = f"sqlite:///{tmp_path}/t.db"
    # One verification is one draw: under no effect an interval excludes 1 by chance at about the
    # one-sided 2.5% rate per comparison (3% measured over 1000 comparisons of this very schedule
    # and statistic; test_verify_stats.py bounds it on synthetic samples). So several
    # verifications on fresh noise: "established" must stay the rare exception (at 3%, 3 or more
    # of 16 comparisons happen about 1% of the time), and what is printed, stored and reported by
    # `best` must agree each time. The verifications draw from their own noise stream: the
    # command's default stream happens to open with a run of five chance wins in six
    # verifications (a ~3% event), which says nothing about ostune.
    env = {"T_LOG": str(tmp_path / "verify.log"),
           "T_FORMULA": "{'p99_ms': math.exp(0.2 * random.Random(f'null:{n}').gauss(0, 1))}"}
    established = comparisons = 0
    for seed in range(1, 9):
        result = ostune("verify", "e", "--db", db, "--rounds", "6", "--repetitions", "1", "--seed", str(seed),
                        "--no-profiles", env=env)
        assert result.returncode == 0, result.stderr
        rows = query(tmp_path / "t.db", "select label, established from verification_results where metric='p99_ms' "
                                        "and label != 'baseline' and verification_id = (select max(id) from verifications)")
        assert "recommended" in dict(rows) and set(dict(rows)) <= {"recommended", "minimal"}
        for label, won in rows:
            line = next(x for x in result.stdout.splitlines() if x.startswith(label) and "p99_ms" in x)
            assert ("improvement established" in line) == bool(won), line
        established += sum(won for _, won in rows)
        comparisons += len(rows)
        best = json.loads(ostune("best", "e", "--db", db, "--json").stdout)
        assert best["verified"] is bool(dict(rows)["recommended"])
        assert ("not established" in best["reason"]) is not best["verified"]
    assert comparisons >= 8 and established <= 2, (established, comparisons)


def test_when_the_baseline_is_best_there_is_nothing_to_change_or_verify(tmp_path):
    # the host's own values (x.a 2, swappiness 60) are the optimum, without noise
    formula = "{'p99_ms': 1.0 + 0.3 * abs(p['x.a'] - 2) + 0.01 * abs(p['vm.swappiness'] - 60)}"
    run(tmp_path, VERIFY_SPACE, formula, trials=8)
    db = f"sqlite:///{tmp_path}/t.db"
    best = json.loads(ostune("best", "e", "--db", db, "--json").stdout)
    assert best["params"] == {"vm.swappiness": 60, "x.a": 2} and best["verified"] is False
    assert "the baseline (the host's own values) is the best configuration found: nothing to change" in best["reason"]
    env = {"T_LOG": str(tmp_path / "verify.log"), "T_FORMULA": formula}
    # not an error (a nightly job that gets here has done its work): one line, exit 0, nothing stored
    alone = ostune("verify", "e", "--db", db, "--rounds", "3", "--repetitions", "1", "--no-profiles", env=env)
    lines = [line for line in alone.stdout.splitlines() if line.strip()]
    assert alone.returncode == 0 and len(lines) == 1 and "the best configuration found is its baseline" in lines[0]
    assert alone.stderr.strip() == "" and not (tmp_path / "verify.log").exists()
    as_json = ostune("verify", "e", "--db", db, "--rounds", "3", "--no-profiles", "--json", env=env)
    answer = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and answer["verification"] is None and "nothing to verify" in answer["nothing_to_verify"]
    assert query(tmp_path / "t.db", "select count(*) from verifications") == [(0,)]
    # with the profiles: measured against the baseline, no 'recommended' copy of it; `best` still reads
    result = ostune("verify", "e", "--db", db, "--rounds", "3", "--repetitions", "1", "--seed", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "the recommended configuration is the baseline" in result.stdout
    labels = {r[0] for r in query(tmp_path / "t.db", "select label from verification_results")}
    assert "recommended" not in labels and {"baseline", "profile:latency-performance"} <= labels
    again = ostune("best", "e", "--db", db, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["verified"] is False, again.stderr


def test_verify_bad_input_is_one_line(tmp_path):
    run(tmp_path, VERIFY_SPACE, "{'p99_ms': 1.0 + 0.01 * z}", trials=3)
    db = f"sqlite:///{tmp_path}/t.db"
    for args, message in ((["nope"], "no experiment named 'nope'"), (["e", "--rounds", "2"], "at least 3 rounds"),
                          (["e", "--rounds", "99999999999999999999"], "--rounds 99999999999999999999: at most 1000")):
        result = ostune("verify", *args, "--db", db)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_profiles_that_are_one_configuration_on_a_space_are_measured_once():
    """network-latency is latency-performance plus knobs (THP, busy polling) a space may lack;
    on a space of swappiness alone they are the same configuration."""
    from tuner.profiles import profile_configs

    only_swappiness = parse_space("parameters:\n  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}\n")
    configs, notes = profile_configs(only_swappiness, {"vm.swappiness": 60})
    assert [(c.label, c.params) for c in configs] == [("profile:latency-performance", {"vm.swappiness": 10})]
    assert "profile network-latency: on this space the same configuration as profile:latency-performance; " \
           "measured once, as that" in notes
    configs, _ = profile_configs(parse_space(PROFILE_SPACE), {"vm.swappiness": 60, "net.core.busy_read": 0,
                                                              "transparent_hugepage.enabled": "always"})
    assert len(configs) == 2  # where they differ, both are measured
