"""numba kernels of the CPU backend (``_cpu`` builds their parameters and calls them), one
module per job; callers import from the modules:

- ``params``: the typed parameters, named tuples numba passes by value (``Sampling``: how the
  block is read; ``Intensity``: the chain after it);
- ``noise``: the counter-based Gaussian noise (the table, the per-voxel hash words) and the
  kernels that only add noise;
- ``chain``: the intensity chain and noise per output row, and the kernel that applies them
  to stored voxels needing no resampling (flips, 90-degree turns);
- ``resample``: the fused pass, resampling + chain + noise in one sweep over the output;
- ``blur``: the separable Gaussian blur, a pass of its own;
- ``extend``: the numba intrinsics and type-dependent helpers the kernels compile in.

numba's on-disk cache (``cache=True``) watches only a kernel's own file, so a kernel that
inlines code from another file could serve a stale compiled version after that file changed.
The kernels that do (``chain``, ``resample``) record the sha256 of the files they inline
from and cache only while those still match (``_cache``); after editing one of those files, run
``python -m streamvol.augment._kernels._cache`` (a test fails until the records are current).
"""
