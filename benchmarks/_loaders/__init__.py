"""The parts of the loaders benchmark that ``benchmarks/loaders.py`` runs, one job a module:
``workload`` (the augmentation every loader does, thread settings), ``data`` (the same crops
in every format), ``others`` (the loaders compared with streamvol's), ``kernel`` (the bare
kernel), ``cases`` (timing, interleaved), ``figures`` (tables, JSON, chart).

What the benchmark runs and the targets it is judged by are written in
``benchmarks/RESULTS.md``, not generated here.
"""
