"""The data layer: datasets, annotations, downloads, the synthetic benchmark, the frame cache and the loader.

Nothing here imports model code.
"""
