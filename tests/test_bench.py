"""Smoke test of the training benchmark: the script runs end to end and reports every column (not the speed)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_train_bench_quick_reports_both_sides(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench/train_vs_trainer.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"trainer", "hubtune", "hubtune_equal"}
    for side, r in results.items():
        assert r["samples_per_second"] > 0 and r["peak_rss_mb"] > 0, side
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["padding_waste"] < 1, side
    assert results["hubtune"]["mfu"] > 0 and report["peaks"]["fp32_gflops"] > 0
    # the same settings means the same batches: hubtune_equal pads like Trainer, the default groups by length
    assert results["hubtune"]["padding_waste"] < results["hubtune_equal"]["padding_waste"]
    assert "vs Trainer" in proc.stdout and "hubtune_equal" in proc.stdout
