"""The lowered instruction set that .ci/run gives the value tests is in force in this torch.

CI runs the value tests twice: natively, and with ATen's kernels, oneDNN and MKL held to older
instruction sets, which sum in another order, as another CPU would. That second run only means
something if torch honours the variables; each is checked here in a fresh interpreter.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import hashlib, json, torch
g = torch.Generator().manual_seed(0)
x, w = torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 3, 3, generator=g)
v = torch.randn(1000, generator=g)
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    conv = torch.nn.functional.conv2d(x, w, padding=1)
digest = lambda t: hashlib.sha1(t.numpy().tobytes()).hexdigest()
print("RESULT " + json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                              "conv": digest(conv), "softmax": digest(v.softmax(0))}))
"""


def probe(**env) -> tuple[dict, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), out


@pytest.fixture(scope="module")
def native() -> dict:
    return probe()[0]


def test_aten_runs_its_portable_kernels_when_held_to_default(native):
    lowered, _ = probe(ATEN_CPU_CAPABILITY="default")
    assert native["capability"] != "DEFAULT", "this machine's own kernels are vectorised"
    assert lowered["capability"] == "DEFAULT"
    assert lowered["softmax"] != native["softmax"], "ATen's reductions sum in another order"


def test_onednn_takes_the_instruction_set_it_is_held_to(native):
    lowered, log = probe(ONEDNN_MAX_CPU_ISA="SSE41")
    assert "isa:Intel SSE4.1" in log, log
    assert lowered["conv"] != native["conv"], "a convolution sums in another order under SSE4.1"
