"""Labeling pipeline: raw egocentric video -> atomic hand-action episodes (episode format v1).

`python -m preprocess.run --input VIDEOS --output DIR` runs the stages (one module each) per clip on local
worker processes or a Ray cluster; heavy learned models sit behind small backend interfaces.
"""
