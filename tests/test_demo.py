"""The demo runs and checks its own result."""

from ndshm import demo


def test_demo_small(capsys):
    assert demo.main(["--size", "8", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "ndshm shared array" in out and "pickled ndarray" in out
    assert "sum = 1,048,576" in out
