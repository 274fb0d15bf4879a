"""Testing tools for Ember.

    python -m ember.testing.fuzz --seed 1 --seconds 60    # differential fuzzing (see fuzz.py)
    ember.testing.gradcheck(fn, *inputs)                  # gradients vs finite differences
"""

from ember.testing.gradcheck import GradcheckError, gradcheck

__all__ = ["GradcheckError", "gradcheck"]
