"""Runners: the same stage functions (`preprocess.graph`) on local worker processes or on a Ray cluster.

Each runner's `execute(run, videos)` takes every video through all stages; results live in the run store,
so what comes out does not depend on the runner or the number of workers.
"""
