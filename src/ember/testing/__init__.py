"""Testing tools for Ember.

    python -m ember.testing.fuzz --seed 1 --seconds 60    # differential fuzzing (see fuzz.py)
"""
