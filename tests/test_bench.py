"""Benchmarks in tiny mode on the tiny-test variant: outputs, keys, positive numbers, skips and config errors."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from pipeline.apps import bench
from pipeline.apps.bench import BACKENDS, BenchConfig, run_benchmarks, write_report
from pipeline.cli import main
from pipeline.core.errors import ConfigError

CPU_BACKENDS = ("pytorch-cpu", "ort-cpu", "ort-cpu-iam")


@pytest.fixture(scope="module")
def tiny_report(exported):
    """Every registered backend, each in its own process, as CI runs it (about a minute on 2 cores), on the session's
    tiny-test export (bench's own export + rewrite run in ``test_cli_non_square_in_process``)."""
    ex = exported("tiny-test", 224)
    return run_benchmarks(BenchConfig.tiny(variant="tiny-test", onnx_path=str(ex.onnx), iam_onnx_path=str(ex.iam)))


def test_tiny_run_covers_every_backend(tiny_report):
    measured = {b["backend"] for b in tiny_report.backends}
    skipped = {s["backend"]: s["reason"] for s in tiny_report.skipped}
    assert not tiny_report.failed, tiny_report.failed
    assert measured | set(skipped) == set(BACKENDS), "every backend is either measured or skipped with a reason"
    assert {"pytorch-cpu", "ort-cpu"} <= measured
    assert all(reason for reason in skipped.values())
    if bench.gpu_name() is None:
        for name in ("pytorch-cuda", "trt-fp32", "trt-fp16", "trt-int8", "trt-topk"):
            assert "no GPU" in skipped[name], f"{name} must be skipped without a GPU, not measured"
    if bench._ort_iam_unavailable(tiny_report_config()) is None:
        assert "ort-cpu-iam" in measured, "the custom-op backend is available here, so it must be measured"


def tiny_report_config() -> BenchConfig:
    return BenchConfig.tiny(variant="tiny-test")


def test_tiny_rows_have_positive_numbers_and_ratios(tiny_report):
    batches = set(bench.TINY_BATCHES)
    for backend in {b["backend"] for b in tiny_report.backends}:
        assert {r["batch"] for r in tiny_report.rows if r["backend"] == backend} == batches
    for row in tiny_report.rows:
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"], row
        assert row["throughput_ips"] > 0 and row["peak_memory_bytes"] > 0, row
        assert row["calls"] == bench.TINY_ITERS and row["device"] == "cpu"
        assert all(v is not None and v > 0 for v in row["ratios"].values()), row
    base = tiny_report.baseline
    assert (base["backend"], base["batch"], base["fallback"]) == ("pytorch-cpu", 1, False)
    base_row = next(r for r in tiny_report.rows if r["backend"] == "pytorch-cpu" and r["batch"] == 1)
    assert base_row["ratios"] == {"throughput": 1.0, "latency": 1.0, "memory": 1.0}
    for b in tiny_report.backends:
        assert b["max_abs_logit_diff_vs_pytorch"] < 1e-3, f"{b['backend']} computes different logits"


def test_tiny_report_has_op_profiles_and_comparisons(tiny_report):
    measured = {b["backend"] for b in tiny_report.backends}
    profiles = {(p["backend"], p["batch"]): p for p in tiny_report.op_profiles}
    for backend in {"ort-cpu", "ort-cpu-iam"} & measured:
        for batch in bench.TINY_BATCHES:
            p = profiles[(backend, batch)]
            assert p["runs"] == bench.TINY_PROFILE_RUNS and p["node_ms"] > 0 and p["run_ms"] > 0
            assert abs(sum(o["share"] for o in p["ops"]) - 1.0) < 1e-6, "op shares must add up to the node time"
            if backend == "ort-cpu":
                assert p["iam_nodes"] == 0 and p["iam_share"] == 0.0
            else:  # tiny-test has one significance-guided block per stage 1-3
                assert p["iam_nodes"] == 3 and 0.0 < p["iam_share"] < 1.0 and p["ms_per_iam_node"] > 0
    if {"ort-cpu", "ort-cpu-iam"} <= measured:
        pairs = {(c["candidate"], c["reference"], c["batch"]): c for c in tiny_report.comparisons}
        for batch in bench.TINY_BATCHES:
            c = pairs[("ort-cpu-iam", "ort-cpu", batch)]
            rows = {r["backend"]: r for r in tiny_report.rows if r["batch"] == batch}
            assert c["sequential_throughput_ratio"] == pytest.approx(
                rows["ort-cpu-iam"]["throughput_ips"] / rows["ort-cpu"]["throughput_ips"])
            # the headline ratio is the interleaved measurement of the same pair, made after the rows
            pair = c["interleaved"]
            assert c["method"] == "interleaved" and c["throughput_ratio"] == pair["throughput_ratio"] > 0
            assert pair["rounds"] == bench.TINY_ITERS and pair["warmup"] == bench.TINY_WARMUP
            assert 0 < pair["round_ratio_min"] <= pair["round_ratio_median"] <= pair["round_ratio_max"]
            assert pair["candidate_median_ms"] > 0 and pair["reference_median_ms"] > 0
        md = bench.render_markdown(tiny_report)
        assert "Same-run comparisons" in md and "onnxruntime op profile" in md
        iam = next(b for b in tiny_report.backends if b["backend"] == "ort-cpu-iam")
        assert iam["details"]["fast_bridge"] is True


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_runner(clock: _FakeClock, name: str, seconds, log: list):
    """A BenchRunner over a runner-protocol runner whose calls take ``seconds(call index)`` on the fake clock and
    are logged by name."""
    from pipeline.apps.bench.backends import BenchRunner
    from pipeline.backends.runners import BaseRunner, Runner

    class Fake(BaseRunner):
        label = name
        calls = 0

        def infer(self, images):
            clock.now += seconds(self.calls)
            self.calls += 1
            log.append(name)
            return images

    fake = Fake(batch=8)
    assert isinstance(fake, Runner)  # the one runner protocol
    return BenchRunner(fake, device="cpu")


def test_interleaved_timing_alternates_and_divides_sums():
    """time_pair: warmup of both, then rounds in alternating order; the ratio is sum(reference) / sum(candidate)."""
    import numpy as np

    from pipeline.apps.bench.measurement import time_pair

    clock, log = _FakeClock(), []
    candidate = _fake_runner(clock, "c", lambda i: 1.0, log)
    reference = _fake_runner(clock, "r", lambda i: 2.0 if i % 2 else 4.0, log)  # 4, 2, 4, 2 ... after warmup
    config = BenchConfig(variant="tiny-test", iters=4, warmup=1)
    row = time_pair(config, candidate, reference, np.zeros((3, 1)), clock=clock)
    assert log == ["c", "r", "c", "r", "r", "c", "c", "r", "r", "c"]  # warmup c r; rounds cr, rc, cr, rc
    # reference times after its warmup call (index 0 = 4 s): calls 1..4 = 2, 4, 2, 4 s; candidate 1 s each
    assert row["rounds"] == 4 and row["batch"] == 3
    assert row["throughput_ratio"] == pytest.approx(12.0 / 4.0)
    assert (row["round_ratio_min"], row["round_ratio_max"], row["round_ratio_median"]) == (2.0, 4.0, 3.0)
    assert row["latency_ratio"] == pytest.approx(1.0 / 3.0)


def test_interleaved_timing_stops_at_twice_the_row_budget():
    import numpy as np

    from pipeline.apps.bench.measurement import time_pair

    clock, log = _FakeClock(), []
    config = BenchConfig(variant="tiny-test", iters=50, warmup=0, max_seconds_per_row=10.0)
    row = time_pair(config, _fake_runner(clock, "c", lambda i: 3.0, log), _fake_runner(clock, "r", lambda i: 3.0, log),
                    np.zeros((1, 1)), clock=clock)
    assert row["rounds"] == 4  # 6 s per round: past 2 x 10 s after round 4 (24 s), never fewer than 3
    assert row["throughput_ratio"] == 1.0


def test_no_interleave_keeps_the_sequential_ratio():
    config = BenchConfig.tiny(variant="tiny-test", backends=("pytorch-cpu", "pytorch-cpu-fused"), batches=(1,),
                              isolate=False, interleave=False)
    report = run_benchmarks(config)
    if {b["backend"] for b in report.backends} != {"pytorch-cpu", "pytorch-cpu-fused"}:
        pytest.fail(f"both eager rows must run on the CPU: {report.failed or report.skipped}")
    (c,) = report.comparisons
    assert c["method"] == "sequential" and c["interleaved"] is None
    assert c["throughput_ratio"] == c["sequential_throughput_ratio"]
    assert "| sequential |" in bench.render_markdown(report)


def test_op_profile_summary_splits_calls_and_skips_warmup():
    from pipeline.apps.bench.op_profile import summarize_events

    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, dur, op):
        return {"cat": "Node", "name": f"n{ts}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0, 100), node(1, 90, "MatMul"),                                        # warm-up, batch 1
              run(200, 100), node(201, 30, "MatMul"), node(240, 10, "SGFormerIAM"),       # profiled, batch 1
              run(400, 100), node(401, 500, "MatMul"),                                     # warm-up, batch 4
              run(600, 50), node(601, 20, "SGFormerIAM"), node(630, 20, "SGFormerIAM"),   # profiled, batch 4
              run(700, 50), node(701, 40, "MatMul")]
    one, four = summarize_events(events, [1, 2], [1, 4])
    assert (one["batch"], one["runs"], one["node_ms"], one["iam_ms"]) == (1, 1, 0.04, 0.01)
    assert one["iam_share"] == pytest.approx(0.25) and one["iam_nodes"] == 1
    assert four["node_ms"] == pytest.approx(0.04) and four["iam_share"] == pytest.approx(0.5)
    assert four["iam_nodes"] == 1 and four["ms_per_iam_node"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="model_run"):
        summarize_events(events, [2, 2], [1, 4])


def test_report_files(tiny_report, tmp_path):
    paths = write_report(tiny_report, tmp_path / "out")
    assert set(paths) == {"json", "md", "png"}
    doc = json.loads(paths["json"].read_text())
    assert doc["schema"] == bench.SCHEMA
    assert {"config", "environment", "baseline", "rows", "backends", "skipped", "failed", "created"} <= set(doc)
    assert doc["config"]["variant"] == "tiny-test" and doc["environment"]["threads"] >= 1
    assert {"latency_ms", "throughput_ips", "peak_memory_bytes", "ratios"} <= set(doc["rows"][0])
    md = paths["md"].read_text()
    assert "baseline: pytorch-cpu batch 1" in md and "| backend | device | batch |" in md
    assert "Skipped" in md or not doc["skipped"]
    with Image.open(paths["png"]) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100
    assert not [p for p in paths["json"].parent.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_missing_baseline_falls_back_and_says_so():
    config = BenchConfig.tiny(variant="tiny-test", backends=("pytorch-cpu",), baseline="ort-cpu:1",
                              batches=(2,), iters=1, warmup=0, isolate=False)
    report = run_benchmarks(config)
    assert report.baseline["fallback"] is True and report.baseline["backend"] == "pytorch-cpu"
    assert "was not measured" in bench.render_markdown(report)


def test_cli_in_process(tmp_path, capsys):
    rc = main(["bench", "--variant", "tiny-test", "--tiny", "--backends", "pytorch-cpu", "--batches", "1",
               "--in-process", "-o", str(tmp_path)])
    assert rc == 0
    assert "| pytorch-cpu | cpu | 1 |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"bench-tiny-test-224.{s}" for s in ("json", "md", "png")]


def test_cli_non_square_in_process(tmp_path, capsys):
    """bench at H x W (issue 22's sizes): the PyTorch row and the onnxruntime row on an export made at 224x448 (a
    static-shape graph: a square or transposed input would fail it); the report names the size as the records do."""
    import json

    rc = main(["bench", "--variant", "tiny-test", "--img-size", "224x448", "--tiny", "--backends", "pytorch-cpu,ort-cpu",
               "--batches", "1", "--in-process", "--no-interleave", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| pytorch-cpu | cpu | 1 |" in out and "| ort-cpu | cpu | 1 |" in out and "@ 224x448" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"bench-tiny-test-224x448.{s}" for s in ("json", "md", "png")]
    assert json.loads((tmp_path / "bench-tiny-test-224x448.json").read_text())["config"]["img_size"] == [224, 448]
    assert BenchConfig(img_size="448x672").img_size == (448, 672)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batches=(0,)), "positive integers"),
        (dict(batches=(1, 1)), "repeat"),
        (dict(iters=0), "--iters"),
        (dict(warmup=-1), "--warmup"),
        (dict(backends=("nope",)), "unknown backend"),
        (dict(baseline="pytorch-cpu"), "BACKEND:BATCH"),
        (dict(variant="x"), "unknown variant"),
        (dict(img_size=256), "multiple of 224"),
        (dict(img_size="224x300"), "multiple of 224"),
        (dict(engines=(("pytorch-cpu", "a.engine"),)), "not a TensorRT backend"),
        (dict(profile_runs=-1), "--profile-runs"),
    ],
)
def test_bad_config_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        BenchConfig(**overrides)


def test_cli_bad_batches_exit_code(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--batches", "1,x", "-o", str(tmp_path)])
    assert "comma-separated integers" in capsys.readouterr().err


def test_total_budget_is_shared_by_the_rows_left():
    """--max-seconds is the whole run's budget: each row gets its share of what is left."""
    from pipeline.apps.bench.suite import budgeted

    config = BenchConfig(variant="tiny-test", max_seconds=30.0)
    clock = iter([10.0, 25.0, 45.0]).__next__  # 10 s, 25 s and 45 s after the start (start = 0)
    assert budgeted(config, 0.0, 10, clock).max_seconds_per_row == pytest.approx(2.0)  # 20 s left / 10 rows
    assert budgeted(config, 0.0, 5, clock).max_seconds_per_row == pytest.approx(1.0)  # 5 s left / 5 rows
    assert budgeted(config, 0.0, 5, clock).max_seconds_per_row == pytest.approx(1e-3)  # spent: minimal rows (>= 3 calls)
    unlimited = BenchConfig(variant="tiny-test")
    assert budgeted(unlimited, 0.0, 5).max_seconds_per_row is None  # control: no budget, no per-row limit
    with pytest.raises(ConfigError, match="--max-seconds"):
        BenchConfig(variant="tiny-test", max_seconds=0)


def test_png_shows_paired_ratios_and_the_load_warning(tiny_report):
    """The plot's third panel has the same-run (paired) ratios; a load above the CPUs adds the warning."""
    import dataclasses

    from pipeline.apps.bench.report import LOAD_WARNING, overloaded, render_plot

    env = dict(tiny_report.environment)
    calm = dataclasses.replace(tiny_report, environment={**env, "loadavg_1min_at_start": 0.0,
                                                         "loadavg_1min_at_end": 0.0})
    busy = dataclasses.replace(tiny_report, environment={**env, "loadavg_1min_at_start": 99.0,
                                                         "loadavg_1min_at_end": 99.0})
    assert not overloaded(calm.environment) and overloaded(busy.environment)
    assert LOAD_WARNING in bench.render_markdown(busy) and LOAD_WARNING not in bench.render_markdown(calm)
    assert tiny_report.comparisons, "the tiny run measures the compared pairs"

    def red(png: bytes) -> int:
        import io

        import numpy as np

        a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
        return int(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum())

    assert red(render_plot(busy)) > red(render_plot(calm)) + 50  # the red warning line is drawn on the PNG
