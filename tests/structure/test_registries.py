"""Every registry is complete once `import ember` returns, in a fresh process: the op rows, the
target-neutral lowerings and the backends' target rules, with nothing filled on first use."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import ember
from ember.ir.ops import OPS
from ember.lower import rules
before = {"ops": len(OPS), "lowerings": len(rules.LOWERINGS),
          "cpu": sorted(rules.TARGET_RULES["cpu"]), "scheduled": sorted(rules.SCHEDULED)}
import numpy as np
x = np.ones((64, 64), np.float32)
ember.compile(lambda a: a @ a, x)
after = {"ops": len(OPS), "lowerings": len(rules.LOWERINGS),
         "cpu": sorted(rules.TARGET_RULES["cpu"]), "scheduled": sorted(rules.SCHEDULED)}
print(json.dumps([before, after, sorted(m for m in sys.modules if m.startswith("ember."))]))
"""


def test_registries_are_complete_at_import() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, env={"EMBER_CACHE": "0", "PATH": ""}).stdout
    before, after, modules = json.loads(out.strip().splitlines()[-1])
    assert before == after
    assert before["cpu"] == ["conv2d", "conv2d_nchwc", "matmul", "matmul_nt"]
    assert "max_pool2d" in before["scheduled"]
    from ember.ir.ops import OPS
    from ember.lower.rules import LOWERINGS

    assert before["ops"] == len(OPS) and before["lowerings"] == len(LOWERINGS)
    assert {"ember.backend.cpu.lower_gemm", "ember.backend.cpu.lower_conv",
            "ember.backend.cpu.lower_conv_nhwc",
            "ember.backend.cuda"} <= set(modules)
