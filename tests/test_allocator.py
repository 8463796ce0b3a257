"""The glibc allocator setting: freed large tensors stay in the process (no munmap + page faults)."""

import json
import os
import subprocess
import sys
import types

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

_PROBE = r"""
import json, os, sys
import torch
from rerankforge.utils.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator()
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
before = rss()
x = torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's default mmap threshold
del x
print(json.dumps({"tuned": tuned, "kept_mib": (rss() - before) / 2**20}))
"""


def _probe(env_value: str) -> dict:
    env = {**os.environ, "RERANKFORGE_TUNE_MALLOC": env_value}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_allocator_keeps_freed_buffers_for_reuse():
    tuned, default = _probe("1"), _probe("0")
    assert tuned["tuned"] is True and default["tuned"] is False
    # glibc's default returns the 64 MiB buffer to the kernel on free; the tuned heap keeps it.
    assert default["kept_mib"] < 16
    assert tuned["kept_mib"] > 48


@pytest.mark.parametrize("value", ["0", "false", "Off"])
def test_env_switch_turns_tuning_off(monkeypatch, value):
    import rerankforge.utils.allocator as allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("RERANKFORGE_TUNE_MALLOC", value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a, **k: pytest.fail("libc touched while switched off"))
    assert allocator.tune_cpu_allocator() is False


def test_tuning_runs_once_per_process(monkeypatch):
    import rerankforge.utils.allocator as allocator

    calls = []

    def mallopt(param, value):
        calls.append(param)
        return 1

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("RERANKFORGE_TUNE_MALLOC", "1")
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a, **k: types.SimpleNamespace(mallopt=mallopt))
    assert allocator.tune_cpu_allocator() is True and allocator.tune_cpu_allocator() is True
    assert sorted(calls) == [-3, -2, -1]  # mmap threshold, top pad, trim threshold: each set once
