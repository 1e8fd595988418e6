"""`profile`'s verdict from its figures: the rules alone, on figures given (no timing)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.profiling import INPUT_BOUND_SHARE, ProfileReport

MS = 1e-3
REPORT = ProfileReport(
    steps_per_call=64,
    calls=5,
    traced_out=0,
    retracing_calls=0,
    step_seconds=1 * MS,
    input_seconds=0.05 * MS,
    compute_seconds=0.95 * MS,
    traces={"train_step": 1, "train_loop": 1},
    warm_traces={"train_step": 1, "train_loop": 1},
    retrace_causes={},
    parameters=100,
    trainable_parameters=100,
    flops=1000,
    flops_note="counted",
    peak_bytes=2**20,
    memory_note="tensors",
)


@pytest.mark.parametrize(
    ("step", "input_alone", "compute", "verdict"),
    [
        (1.0, 0.05, 0.95, "compute-bound"),
        (20.0, 19.5, 0.5, "input-bound"),  # A slow map: the step waits on every batch.
        (1.0, 0.05, 0.5, "compute-bound"),  # Waits half the time, but reading is fast: noise.
        (1.0, 0.5, 0.95, "compute-bound"),  # Reading is slow, but overlapped: no wait.
        (1.0, INPUT_BOUND_SHARE, 1 - INPUT_BOUND_SHARE, "input-bound"),  # On both thresholds.
    ],
)
def test_input_bound_needs_a_wait_and_a_slow_read(
    step: float, input_alone: float, compute: float, verdict: str
) -> None:
    report = dataclasses.replace(
        REPORT, step_seconds=step * MS, input_seconds=input_alone * MS, compute_seconds=compute * MS
    )
    assert report.verdict.startswith(f"{verdict}: "), report.verdict
    if verdict == "input-bound":
        assert "add prefetch/cache/parallel map in data.py" in report.verdict


def test_traces_in_two_calls_are_retracing_and_in_one_a_one_off() -> None:
    traced = dataclasses.replace(
        REPORT,
        retracing_calls=1,
        traces={"train_step": 2, "train_loop": 1},
        retrace_causes={"train_step": "the trainable variables changed: a new step for the set"},
    )
    one_off = (
        "; one call traced again, a one-off: train_step traced 1 more time after warm-up (the "
        "trainable variables changed: a new step for the set)"
    )
    assert traced.verdict.startswith("compute-bound: ") and traced.verdict.endswith(one_off)
    again = dataclasses.replace(
        traced, retracing_calls=2, traces={"train_step": 3, "train_loop": 1}
    )
    assert again.verdict.startswith(
        "retracing: train_step traced 2 more times after warm-up (the trainable variables "
        "changed: a new step for the set), in 2 calls; "
    ), again.verdict
    assert again.retraced == {"train_step": 2}


def test_the_report_is_one_line_per_figure_then_the_verdict() -> None:
    lines = str(REPORT).splitlines()
    assert lines[0] == "step          1.000 ms per step over 5 calls of 64 steps"
    assert lines[1] == "  input wait  0.050 ms per step (5 %): the loop's minus compute"
    assert lines[-2] == "trace         none written"
    assert lines[-1] == f"verdict: {REPORT.verdict}"
