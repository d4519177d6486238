"""The dtype × batch sweep (the GPU check) runs end to end on the CPU with the tiny model."""

from __future__ import annotations

from worker.model import cpu_has_native_bf16
from worker.sweep import format_sweep, run_sweep


def test_sweep_reports_every_dtype_and_batch() -> None:
    dtypes = ["float32", "bfloat16"] if cpu_has_native_bf16() else ["float32"]
    results = run_sweep("random:tiny", device="cpu", dtypes=dtypes, batches=[1, 3], repeats=1)
    rows = {(r["dtype"], r["batch"]): r for r in results["rows"]}
    assert set(rows) == {(d, b) for d in dtypes for b in (1, 3)}
    assert all(r["pairs_per_s"] > 0 and r["matmul_tflops"] > 0 for r in rows.values())
    # float32 is the reference; a half-precision run deviates, but only a little
    assert rows[("float32", 1)]["max_abs_diff_vs_float32"] == 0.0
    if "bfloat16" in dtypes:
        assert 0.0 < rows[("bfloat16", 3)]["max_abs_diff_vs_float32"] < 0.05
    table = format_sweep(results)
    for dtype in dtypes:
        assert dtype in table
