"""First compiles from several threads at once, in a fresh process, all succeed and are right.

The op and lowering registries are filled when `ember` is imported; a registry filled lazily on
first use let one thread see it half full (`unknown op 'transpose'`, `no CPU lowering for ops:
matmul`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import threading

    import numpy as np

    import ember
    from ember.nn import functional as F

    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 6)).astype(np.float32)
    b = rng.standard_normal((8, 5)).astype(np.float32)
    img = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)


    def conv_reference():
        padded = np.pad(img, ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", windows, w)


    def layer_norm_reference():
        centered = a - a.mean(-1, keepdims=True)
        return centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + 1e-5)


    CASES = [
        (lambda x, y: x.T @ y, (a, b), lambda: a.T @ b),
        (lambda x, k: F.conv2d(x, k, padding=1), (img, w), conv_reference),
        (lambda x: F.softmax(x, dim=-1), (a,),
         lambda: np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
        (lambda x: (x * 2.0 + 1.0).sum(axis=0), (a,), lambda: (a * 2 + 1).sum(0)),
        (lambda x: F.relu(x).max(axis=1), (a,), lambda: np.maximum(a, 0).max(1)),
        (lambda x: F.layer_norm(x, (6,)), (a,), layer_norm_reference),
        (lambda x: F.max_pool2d(x, 2), (img,), lambda: img.reshape(1, 2, 3, 2, 3, 2).max((3, 5))),
        (lambda x: x.reshape(6, 8).transpose(1, 0)[1:, None], (a,),
         lambda: a.reshape(6, 8).T[1:, None]),
    ]
    errors = []
    barrier = threading.Barrier(len(CASES))


    def work(case):
        fn, args, reference = case
        try:
            barrier.wait()
            got = ember.compile(fn, *args, opt_level=3)(*args)
            np.testing.assert_allclose(got, reference(), rtol=1e-4, atol=1e-5)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")


    threads = [threading.Thread(target=work, args=(case,)) for case in CASES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("\\n".join(errors) or "all agree")
    """
)


def test_first_compiles_from_eight_threads_in_a_fresh_process_agree_with_numpy(tmp_path) -> None:
    env = {**os.environ, "EMBER_CACHE_DIR": str(tmp_path)}  # an empty cache: real compiles
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "all agree", done.stdout


def test_registries_are_complete_once_ember_is_imported() -> None:
    script = textwrap.dedent(
        """
        import ember
        from ember.ir.ops import OPS
        from ember.lower.rules import LOWERINGS, SCALAR_RULES
        missing = [op for op in ("matmul", "transpose", "conv2d", "add", "slice", "softmax")
                   if op not in OPS or op not in LOWERINGS]
        missing += [op for op in ("const", "max_pool2d", "layer_norm") if op not in OPS]
        print(missing, "relu" in SCALAR_RULES)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "[] True", done.stderr
