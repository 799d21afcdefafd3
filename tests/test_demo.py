"""The demo runs the seed workload three ways and checks that the results agree."""

import re

import numpy as np
import pytest

from ndshm import demo

SIZE = 120  # rows: three blocks, the last one partial


def test_demo_small(capsys):
    assert demo.main(["--size", str(SIZE), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"r: {SIZE} x 10,000 float64" in out
    assert "3 blocks of 50 rows; 2 workers" in out
    for label in ("(a) ndshm.map_blocks", "(b) process_map (arrays pickled)", "(c) numpy, one process"):
        line = next((ln for ln in out.splitlines() if ln.startswith(label)), None)
        assert line is not None, f"no line for {label!r} in:\n{out}"
        assert re.search(r"\d+\.\d\d s\s+\d+\.\d\dx\s+\d+\.\d\dx$", line), line
    assert re.search(r"^results: all three equal \((bit for bit|within 1e-12)\)$", out, re.M), out


@pytest.mark.parametrize("broken", ["run_numpy", "run_process_map"])
def test_demo_fails_when_a_result_differs(capsys, monkeypatch, broken):
    right = getattr(demo, broken)

    def wrong(*args):
        r = np.array(right(*args))
        r[SIZE // 2, 7] += 1e-6
        return r

    monkeypatch.setattr(demo, broken, wrong)
    assert demo.main(["--size", str(SIZE), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    who = "numpy" if broken == "run_numpy" else "process_map"
    expect = f"results: NOT equal: {who} vs ndshm.map_blocks: 1 of {SIZE * 10_000:,} entries differ"
    assert f"{expect}, first at ({SIZE // 2}, 7)" in out
    assert "all three equal" not in out


def test_demo_rejects_bad_sizes():
    with pytest.raises(SystemExit) as e:
        demo.main(["--size", "0"])
    assert e.value.code == 2
