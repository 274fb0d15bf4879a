"""Lowering: scheduled graph -> loop IR (loop nests, loads, stores, vector math) and schedules."""
