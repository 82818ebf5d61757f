"""Pure rules: how repetitions aggregate and what the optimizer is told about each trial."""

import math

import pytest

from spaces.loader import parse_space
from tuner.errors import WorkloadError
from tuner.measure import aggregate
from tuner.optimizer import Observation, model_targets, propose


def test_median_per_metric_and_sample_sd_of_the_objective():
    reps = [{"p99_ms": 1.0, "ops_per_s": 10}, {"p99_ms": 9.0, "ops_per_s": 30}, {"p99_ms": 2.0, "ops_per_s": 20}]
    result = aggregate(reps, "p99_ms")
    assert result.objective == 2.0  # the outlier repetition does not move the trial's value
    assert result.metrics == {"p99_ms": 2.0, "ops_per_s": 20.0}
    assert result.objective_sd == pytest.approx(math.sqrt(((1 - 4) ** 2 + (9 - 4) ** 2 + (2 - 4) ** 2) / 2))


def test_missing_objective_names_what_was_reported():
    with pytest.raises(WorkloadError, match="objective metric 'p99_ms' was not reported \\(reported: ops_per_s\\)"):
        aggregate([{"ops_per_s": 1.0}], "p99_ms")


def test_failed_trials_get_worst_plus_margin_and_aborted_ones_are_ignored():
    obs = [
        Observation({"a": 1}, "succeeded", math.e),        # log -> 1
        Observation({"a": 2}, "succeeded", math.e ** 3),   # log -> 3
        Observation({"a": 3}, "failed", None),
        Observation({"a": 4}, "infeasible", 0.1),
        Observation({"a": 5}, "aborted", None),
    ]
    pairs = model_targets(obs, maximize=False)
    values = {p["a"]: v for p, v in pairs}
    assert values[1] == pytest.approx(1) and values[2] == pytest.approx(3)
    assert values[3] == pytest.approx(3.5) and values[4] == pytest.approx(3.5)
    assert 5 not in values
    # before any success there is no worst value: failures share one value, which moves the
    # engine along its design (else it proposed the failed configuration again and again)
    assert model_targets([Observation({"a": 3}, "failed", None), Observation({"a": 4}, "infeasible", 2.0)],
                         maximize=False) == [({"a": 3}, 0.0), ({"a": 4}, 0.0)]


def test_maximize_negates_so_engines_always_minimize():
    pairs = model_targets([Observation({}, "succeeded", 100.0), Observation({}, "succeeded", 10.0)], maximize=True)
    assert pairs[0][1] < pairs[1][1]


def test_proposals_respect_relations_and_types():
    space = parse_space("""
parameters:
  vm.dirty_background_ratio: {kind: sysctl, type: int, range: [1, 50]}
  vm.dirty_ratio: {kind: sysctl, type: int, range: [1, 50]}
  x.flag: {kind: sysctl, type: bool}
relations:
  - vm.dirty_background_ratio < vm.dirty_ratio
""")
    observations = []
    for i in range(15):
        proposal = propose(space, observations, seed=3, maximize=False)
        p = proposal.params
        assert p["vm.dirty_background_ratio"] < p["vm.dirty_ratio"]
        assert isinstance(p["x.flag"], bool) and isinstance(p["vm.dirty_ratio"], int)
        observations.append(Observation(p, "succeeded", 1.0 + p["vm.dirty_ratio"] / 10))


def test_rebuilt_engine_is_deterministic_for_the_same_history():
    space = parse_space("parameters:\n  x.a: {kind: sysctl, type: float, range: [0.0, 1.0]}\n  x.b: {kind: sysctl, type: int, range: [1, 1000], log: true}\n")
    history = [Observation({"x.a": i / 10, "x.b": 10 * i + 1}, "succeeded", 1 + (i - 4) ** 2) for i in range(10)]
    first = propose(space, history, seed=11, maximize=False).params
    again = propose(space, history, seed=11, maximize=False).params
    assert first == again


def test_a_search_whose_trials_all_failed_so_far_moves_on():
    from spaces.loader import parse_space

    space = parse_space("parameters:\n  x.a: {kind: sysctl, type: int, range: [0, 100]}\n"
                        "  x.b: {kind: sysctl, type: categorical, choices: [p, q, r]}\n", source="t")
    history: list[Observation] = []
    for _ in range(6):
        proposal = propose(space, history, seed=3, maximize=False)
        assert proposal.params not in [o.params for o in history], history
        history.append(Observation(proposal.params, "failed", None))


@pytest.mark.parametrize("stdout, message", [
    ("", "command printed nothing"),
    ("warming up\nnot json", "command's last stdout line is not JSON: 'not json'"),
    ("[1, 2]", "command's last stdout line must be a non-empty JSON object"),
    ('{"p99_ms": NaN}', "metric 'p99_ms' is not a finite number: 'nan'"),
    ('{"p99_ms": "fast"}', "metric 'p99_ms' is not a finite number: 'fast'"),
    ('{"p99_ms": true}', "metric 'p99_ms' is not a finite number: 'True'"),
    # an integer beyond any float stopped the whole run (OverflowError) instead of failing the trial
    ('{"p99_ms": 1' + "0" * 400 + "}", "metric 'p99_ms' is not a finite number: '1000000000"),
])
def test_a_commands_metrics_line_that_is_not_finite_numbers_fails_the_trial_with_its_reason(stdout, message):
    from targets.workloads.command import parse_metrics_line

    assert parse_metrics_line('noise\n{"p99_ms": 1.5, "ops": 2}\n') == {"p99_ms": 1.5, "ops": 2.0}
    with pytest.raises(WorkloadError) as caught:
        parse_metrics_line(stdout)
    assert str(caught.value).startswith(message), str(caught.value)
