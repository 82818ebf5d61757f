"""Reading results: `ostune report` (self-contained HTML), `export` in every format, `show`'s
sparkline and `compare` — through the real CLI on experiments run with the command workload."""

from __future__ import annotations

import base64
import configparser
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, ostune, query

MIXED_SPACE = """
name: mixed
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  net.ipv4.tcp_rmem:
    kind: sysctl
    type: categorical
    choices: ["4096 131072 6291456", "4096 87380 16777216"]
    default: "4096 131072 6291456"
  transparent_hugepage.enabled:
    kind: sysfs
    path: /sys/kernel/mm/transparent_hugepage/enabled
    type: categorical
    choices: [always, madvise, never]
    default: madvise
  read_ahead_kb: {kind: sysfs, path: /sys/block/vda/queue/read_ahead_kb, type: int, range: [0, 4096], default: 128}
  mitigations: {kind: boot, type: categorical, choices: [auto, "off"], default: auto}
"""

MIXED_COMMAND = (
    f"{sys.executable} -c \"import json,os;p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
    "print(json.dumps({'p99_ms': 1+p['vm.swappiness']/100+(p['transparent_hugepage.enabled']!='never')"
    "+0.5*(p['mitigations']=='auto')+p['read_ahead_kb']/8192}))\""
)


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    space = tmp / "mixed.yaml"
    space.write_text(MIXED_SPACE)
    quad = tmp / "quad.yaml"
    quad.write_text(QUADRATIC_SPACE)
    db = tmp / "r.db"
    for name, space_file, command, trials in (("mixed", space, MIXED_COMMAND, 12), ("quad-a", quad, QUADRATIC_COMMAND, 8),
                                              ("quad-b", quad, QUADRATIC_COMMAND, 5)):
        result = ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command", command,
                        "--trials", str(trials), "--experiment", name, "--db", f"sqlite:///{db}", "--seed", "7",
                        "--repetitions", "3")
        assert result.returncode == 0, result.stderr
    return tmp, db


def export(db, name, fmt, *extra):
    return ostune("export", name, "--db", f"sqlite:///{db}", "--format", fmt, *extra)


def _trial_with(db, experiment, param, value):
    rows = query(db, "select trial from trial_params where experiment=? and param=? and value=? "
                     "and trial in (select trial from trial_results where experiment=? and status='succeeded') "
                     "order by trial limit 1", experiment, param, value, experiment)
    assert rows, f"no trial of {experiment} with {param}={value}"
    return rows[0][0]


def test_sysctl_d_export_is_key_equals_value_lines_of_the_recommended_trial(dbs):
    tmp, db = dbs
    out = tmp / "99-ostune.conf"
    result = export(db, "mixed", "sysctl.d", "--output", str(out))
    assert result.returncode == 0, result.stderr
    best = json.loads(ostune("best", "mixed", "--db", f"sqlite:///{db}", "--json").stdout)
    pairs = {}
    for line in out.read_text().splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        match = re.fullmatch(r"([a-z0-9_.]+) = (\S.*)", line)
        assert match, f"not a sysctl.d line: {line!r}"
        pairs[match.group(1)] = match.group(2)
    assert pairs == {"vm.swappiness": str(best["params"]["vm.swappiness"]),
                     "net.ipv4.tcp_rmem": best["params"]["net.ipv4.tcp_rmem"]}
    assert f"trial {best['trial']}" in out.read_text().splitlines()[0]
    # the objective `best` gives (the median of the configuration's measurements), not its first trial's
    header = out.read_text().splitlines()[0]
    assert f"p99_ms = {best['objective']:.4g}" in header, (header, best["objective"])
    if best["measurements"] > 1:
        assert f"median of {best['measurements']}" in header, header


def test_tuned_profile_parses_with_configparser_and_has_the_expected_sections(dbs):
    tmp, db = dbs
    trial = _trial_with(db, "mixed", "mitigations", "off")
    profile = tmp / "ostune-mixed"
    result = export(db, "mixed", "tuned", "--trial", str(trial), "--output", str(profile))
    assert result.returncode == 0, result.stderr
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep keys as written
    parser.read_string((profile / "tuned.conf").read_text())
    assert parser.sections() == ["main", "sysctl", "vm", "sysfs", "bootloader"]
    params = dict(query(db, "select param, value from trial_params where experiment='mixed' and trial=?", trial))
    assert parser["sysctl"]["vm.swappiness"] == str(int(params["vm.swappiness"]))
    assert parser["sysctl"]["net.ipv4.tcp_rmem"] == params["net.ipv4.tcp_rmem"]
    assert parser["vm"]["transparent_hugepages"] == params["transparent_hugepage.enabled"]
    assert parser["sysfs"]["/sys/block/vda/queue/read_ahead_kb"] == str(int(params["read_ahead_kb"]))
    assert parser["bootloader"]["cmdline"] == "mitigations=off"
    assert f"trial {trial}" in parser["main"]["summary"]


def _sourced(fragment: Path) -> str:
    return subprocess.run(["sh", "-c", f'GRUB_CMDLINE_LINUX="quiet"; . {fragment}; printf %s "$GRUB_CMDLINE_LINUX"'],
                          capture_output=True, text=True, check=True).stdout


def test_grub_fragment_says_where_it_comes_from_and_appends_to_the_existing_command_line(dbs):
    tmp, db = dbs
    off = _trial_with(db, "mixed", "mitigations", "off")
    frag = tmp / "ostune.cfg"
    result = export(db, "mixed", "grub", "--trial", str(off), "--output", str(frag))
    assert result.returncode == 0, result.stderr
    lines = frag.read_text().splitlines()
    assert lines[0].startswith(f"# ostune mixed trial {off}:"), lines
    assert [line for line in lines if not line.startswith("#")] == ['GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} mitigations=off"']
    assert _sourced(frag) == "quiet mitigations=off"
    # a boot parameter at its default stays off the command line: the line is a no-op and says so
    auto = _trial_with(db, "mixed", "mitigations", "auto")
    frag_auto = tmp / "ostune-auto.cfg"
    assert export(db, "mixed", "grub", "--trial", str(auto), "--output", str(frag_auto)).returncode == 0
    lines = frag_auto.read_text().splitlines()
    assert any("changes no kernel boot parameter" in line for line in lines if line.startswith("#")), lines
    assert lines[-1] == 'GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX}"'
    assert _sourced(frag_auto) == "quiet"


def test_trials_export_as_json_and_csv_match_the_database(dbs):
    tmp, db = dbs
    rows = query(db, "select trial, status, objective from trial_results where experiment='quad-a' order by trial")
    doc = json.loads(export(db, "quad-a", "json").stdout)
    assert [(t["trial"], t["status"], t["objective"]) for t in doc["trials"]] == rows
    assert doc["trials"][0]["param:x.c"] == "p" and doc["objective"] == "p99_ms"
    # values in their own types, not the database's floats: an int knob is 5, not 5.0
    assert all(isinstance(t["param:x.a"], int) for t in doc["trials"]), doc["trials"][0]
    out = tmp / "trials.csv"
    assert export(db, "quad-a", "csv", "--output", str(out)).returncode == 0
    parsed = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(int(r["trial"]), r["status"], float(r["objective"])) for r in parsed] == rows
    assert {"param:x.a", "param:x.b", "param:x.c", "metric:p99_ms"} <= set(parsed[0])
    assert all(r["param:x.a"].isdigit() for r in parsed), parsed[0]


def test_export_bad_input_is_one_line(dbs):
    _tmp, db = dbs
    for args, text in ((["mixed", "--format", "tuned", "--trial", "999"], "has no trial 999"),
                       (["nope", "--format", "csv"], "no experiment named 'nope'"),
                       (["mixed", "--format", "yaml"], "Invalid value for '--format'")):
        result = ostune("export", *args, "--db", f"sqlite:///{db}")
        assert result.returncode == 2 and text in result.stderr, result.stderr


def _images(html_text):
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)


def test_report_is_self_contained_html_with_embedded_plots(dbs):
    tmp, db = dbs
    out = tmp / "mixed.html"
    result = ostune("report", "mixed", "--db", f"sqlite:///{db}", "--output", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    images = _images(text)
    alts = [alt for alt, _ in images]
    assert alts == ["best-so-far objective over trials", "objective against the value of each parameter",
                    "parameter importance"]
    for _alt, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in text and "http://" not in text and "https://" not in text
    best = query(db, "select trial, objective, objective_sd from trial_results where experiment='mixed' "
                     "and status='succeeded' order by objective limit 1")[0]
    assert f"<td>{best[0]} ★</td>" in text  # top table, recommended trial first
    assert "Not verified" in text and "No host facts recorded" in text
    for heading in ("Best so far", "Parameter effects", "Parameter importance", "Top configurations",
                    "Verification", "Host"):
        assert f"<h2>{heading}</h2>" in text


def test_report_shows_profiles_verification_and_host_facts_when_present(dbs):
    """Reference lines for shipped-profile trials, a CI table from verification_results, and the
    host facts stored with the run — inserted here as those features would store them."""
    import sqlite3
    from datetime import datetime

    tmp, db = dbs
    copy = tmp / "extra.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    exp_id = conn.execute("select id from experiments where name='quad-a'").fetchone()[0]
    conn.execute("update trials set source='profile:throughput-performance' where experiment_id=? and number=2", (exp_id,))
    conn.execute("update runs set host_facts_json=? where experiment_id=?",
                 (json.dumps({"hostname": "db1", "kernel": "6.1.0-test", "cpu_model": "Xeon", "cpu_count": 8,
                              "memory_mb": 32000}), exp_id))
    vid = conn.execute("insert into verifications (experiment_id, created_at, rounds, metric, schedule_json, status) "
                       "values (?, ?, 8, 'p99_ms', '[]', 'finished')", (exp_id, str(datetime.now()))).lastrowid
    conn.execute("insert into verification_results (verification_id, label, trial_number, params_json, metric, samples,"
                 " median, relative, ci_low, ci_high, established) values (?, 'trial 3', 3, '{}', 'p99_ms', 8, 1.2,"
                 " 0.71, 0.62, 0.83, 1)", (vid,))
    conn.commit()
    conn.close()
    out = tmp / "extra.html"
    assert ostune("report", "quad-a", "--db", f"sqlite:///{copy}", "--output", str(out)).returncode == 0
    text = out.read_text()
    assert "profile:throughput-performance = " in text
    assert "verification results with confidence intervals" in [alt for alt, _ in _images(text)]
    assert "0.62 – 0.83" in text and "6.1.0-test" in text and "Xeon" in text


def test_show_prints_a_sparkline_of_best_so_far(dbs):
    _tmp, db = dbs
    result = ostune("show", "quad-a", "--db", f"sqlite:///{db}")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("best-so-far p99_ms:"))
    spark = line.split()[2]
    succeeded = query(db, "select objective from trial_results where experiment='quad-a' and status='succeeded' "
                          "order by trial")
    assert len(spark) == len(succeeded) and set(spark) <= set("▁▂▃▄▅▆▇█")
    assert list(spark) == sorted(spark, reverse=True)  # best-so-far of a minimized objective never rises
    assert f"{succeeded[0][0]:.4g} → {min(s[0] for s in succeeded):.4g}" in line
    # then what ostune recommends, which need not be the luckiest trial the sparkline ends on
    recommended = json.loads(ostune("best", "quad-a", "--db", f"sqlite:///{db}", "--json").stdout)
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"recommended: trial {recommended['trial']} ({recommended['measurements']} measurement(s)")


def test_compare_two_experiments(dbs):
    _tmp, db = dbs
    result = ostune("compare", "quad-a", "quad-b", "--db", f"sqlite:///{db}", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    best = dict(query(db, "select experiment, min(objective) from trial_results where status='succeeded' "
                          "group by experiment"))
    assert doc["a"]["best_objective"] == best["quad-a"] and doc["b"]["best_objective"] == best["quad-b"]
    assert doc["best_ratio"] == pytest.approx(best["quad-b"] / best["quad-a"])
    assert doc["same_space"] is True and doc["comparable"] is True
    assert [p["name"] for p in doc["params"]] == ["x.a", "x.b", "x.c"]
    # side by side is what `ostune best` recommends (and export deploys), not the luckiest trial
    for side, name in (("a", "quad-a"), ("b", "quad-b")):
        best_doc = json.loads(ostune("best", name, "--db", f"sqlite:///{db}", "--json").stdout)
        assert doc[side]["recommended_trial"] == best_doc["trial"]
        assert doc[side]["recommended_objective"] == best_doc["objective"]
        assert {p["name"]: p[side] for p in doc["params"]} == best_doc["params"]
    assert doc["recommended_ratio"] == pytest.approx(doc["b"]["recommended_objective"] / doc["a"]["recommended_objective"])
    text = ostune("compare", "quad-a", "quad-b", "--db", f"sqlite:///{db}")
    assert text.returncode == 0 and "quad-a vs quad-b" in text.stdout
    assert "recommended configurations" in text.stdout and "recommended minimize p99_ms (medians)" in text.stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (setup.sh test installs it)")
def test_headless_chromium_renders_the_report(dbs):
    tmp, db = dbs
    out = tmp / "shot.html"
    assert ostune("report", "quad-a", "--db", f"sqlite:///{db}", "--output", str(out)).returncode == 0
    png = tmp / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tempfile.mkdtemp()}", f"--screenshot={png}", "--window-size=1200,1800",
                    f"file://{out}"], capture_output=True, timeout=120, check=True)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1800) and len(data) > 50_000  # a blank page compresses to a few KiB


def test_an_output_that_is_the_database_being_read_is_refused_and_the_database_kept(dbs):
    """`--output ostune.db` (a slip for `ostune.csv`) wrote the export over the results."""
    tmp, db = dbs
    before = db.read_bytes()
    link = tmp / "same-file.db"
    link.unlink(missing_ok=True)
    link.hardlink_to(db)
    for args in (("export", "quad-a", "--format", "csv", "--output", str(db)),
                 ("export", "quad-a", "--format", "sysctl.d", "--output", str(link)),
                 ("export", "quad-a", "--format", "json", "--output", f"{db}-wal"),
                 ("report", "quad-a", "--output", str(db))):
        result = ostune(*args, "--db", f"sqlite:///{db}")
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(f"error: --output {args[-1]} is the result database being read"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == before
    assert not Path(f"{db}-wal").exists()
    assert ostune("show", "quad-a", "--db", f"sqlite:///{db}").returncode == 0


def test_compare_gives_no_ratio_across_objectives_and_shows_names_as_they_are(dbs):
    """ops/s over ms is no ratio, "not comparable" or not; a name with brackets is a name, not
    markup (`[red]` vanished from the table's header)."""
    tmp, db = dbs
    name = "max[red]imum"
    made = ostune("run", "--app", "command", "--host", "none", "--space", str(tmp / "quad.yaml"), "--command",
                  QUADRATIC_COMMAND, "--trials", "2", "--experiment", name, "--db", f"sqlite:///{db}",
                  "--objective", "ops_per_s", "--maximize", "--repetitions", "1", "--seed", "7")
    assert made.returncode == 0, made.stderr
    doc = json.loads(ostune("compare", "quad-a", name, "--db", f"sqlite:///{db}", "--json").stdout)
    assert doc["same_objective"] is False and doc["recommended_ratio"] is None and doc["best_ratio"] is None
    text = ostune("compare", "quad-a", name, "--db", f"sqlite:///{db}", env={"COLUMNS": "200"}).stdout
    assert f"quad-a vs {name}" in text and text.count(name) >= 3, text  # title and both tables' headers
    assert f"no ratio: quad-a optimizes minimize p99_ms, {name} maximize ops_per_s" in text, text
    assert " = " not in text.splitlines()[-1], text
    # a tuned profile's default directory is one plain name here
    exported = ostune("export", name, "--db", f"sqlite:///{db}", "--format", "tuned", cwd=tmp)
    assert exported.returncode == 0, exported.stderr
    assert (tmp / "ostune-max-red-imum" / "tuned.conf").is_file()
    assert "tuned-adm profile ostune-max-red-imum" in exported.stdout


def test_a_report_on_a_name_the_plot_font_lacks_prints_no_warnings(tmp_path):
    """matplotlib warned once per missing glyph, naming its own source files, on the terminal."""
    space = tmp_path / "s.yaml"
    space.write_text("parameters:\n  x.a: {kind: sysctl, type: int, range: [0, 10], default: 5}\n")
    db = f"sqlite:///{tmp_path}/c.db"
    made = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command",
                  QUADRATIC_COMMAND.replace("(p['x.b'])", "(10)").replace("(p['x.c']!='q')", "0"), "--trials", "3",
                  "--experiment", "東京", "--db", db, "--repetitions", "1")
    assert made.returncode == 0, made.stderr
    result = ostune("report", "東京", "--db", db, "--output", str(tmp_path / "r.html"))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "<img" in (tmp_path / "r.html").read_text()
