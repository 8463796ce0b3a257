"""README.md's Python example runs as written, and its two set-up commands are the ones CI runs."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def python_example() -> str:
    section = README.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_example())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the trainer's own progress lines come first; the example's prints are the last three
    lines = proc.stdout.strip().splitlines()[-3:]
    assert lines[0].startswith("[") and "'corpus_id': 0" in lines[1] and "'text': " in lines[1], lines
    first, reranked = map(float, lines[-1].split())
    assert 0.5 < first < 1.0 and 0.0 <= reranked <= 1.0
    assert (tmp_path / "runs" / "example" / "model" / "config.json").exists()


def test_readme_setup_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"TEST_CMD='(.*)'", ci).group(1)
    assert test_cmd in README
    assert "rerankforge quickstart --out runs/quickstart" in README
