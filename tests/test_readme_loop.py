"""The README's hand-written PyTorch-style loop, run as written on the real MNIST files
(shortened to 4,096 training rows and one epoch), so the README cannot drift from
the Tensor API."""
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import mnist_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def _loop_program():
    text = README.read_text()
    start = text.index("## PyTorch style: a hand-written loop")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    assert "mg.softmax_cross_entropy" in block and ".float().mean()" in block
    shortened = block.replace("range(0, 60000, 128)", "range(0, 4096, 128)")
    shortened = shortened.replace("for epoch in range(2):", "for epoch in range(1):")
    assert shortened.count("4096") == 1 and "range(1)" in shortened, "the README loop changed shape"
    return shortened


def test_the_readme_loop_runs_and_learns():
    env = dict(os.environ, MINIGRAD_DATA=str(mnist_dir()))
    out = subprocess.run([sys.executable, "-c", _loop_program()], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.fullmatch(r"epoch 1: last batch loss (\d\.\d{4}), test accuracy (\d\.\d{4})\n", out.stdout)
    assert match, out.stdout
    loss, accuracy = float(match.group(1)), float(match.group(2))
    assert loss < 1.0 and accuracy > 0.85, out.stdout  # 32 steps of RMSprop on real digits
