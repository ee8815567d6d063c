"""The benchmark report runner: result lines, missing and failing benchmarks, the Markdown."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402


def _outcome(output: str, status: str = "ok") -> report.Outcome:
    bench = report.Benchmark("x", "bench_x.py", ("--n", "1"), "a test benchmark", 10)
    return report.Outcome(bench, status, 1.5, output)


def test_result_line_is_the_last_key_value_line():
    out = "machine: cpu\nratio 0.9 (goal)\na=1 b=2.5\nc=3 m-b.t-c.first_s=2.6\nwrote file.png\n"
    assert _outcome(out).result_line == "c=3 m-b.t-c.first_s=2.6"
    assert _outcome("no result here\nratio: 0.9\n").result_line == ""


def test_every_listed_benchmark_exists_and_a_missing_one_is_reported_absent():
    absent = report.Benchmark("gone", "bench_does_not_exist.py", (), "missing", 5)
    assert report.run(absent).status == "absent"
    listed = {b.script for b in report.BENCHMARKS}
    assert listed <= {p.name for p in BENCH.glob("bench_*.py")}


def test_failed_run_and_markdown(tmp_path):
    script = tmp_path / "bench_fail.py"
    script.write_text("print('ratio=0.5')\nraise SystemExit(3)\n")
    failing = report.Benchmark("fail", str(script), (), "fails on purpose", 30)
    outcome = report.run(failing)
    assert outcome.status == "failed (rc 3)"
    assert outcome.result_line == "ratio=0.5"
    text = report.render([outcome, _outcome("k=1")], "machine: test", 60.0, full=False)
    assert "| fail | fails on purpose | failed (rc 3) |" in text
    assert "`k=1`" in text and "machine: test" in text


def test_tail_keeps_finished_progress_bars_only():
    bar = "frames:  48%|████▊     | 43/89 [00:10<00:11,  4.00frame/s]"
    done = "frames: 100%|██████████| 89/89 [00:20<00:00,  4.00frame/s]"
    assert report._tail(f"a\n{bar}\n{bar}\r{done}\nb=1").splitlines() == ["a", done, "b=1"]
