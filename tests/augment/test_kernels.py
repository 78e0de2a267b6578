"""The kernels' package: typed parameters compile one kernel per array type, and numba's on-disk
cache never serves a kernel built from an older version of a helper it inlines from another
file (see ``streamvol/augment/_kernels/__init__.py``)."""

from __future__ import annotations

import ast
import shutil
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

from streamvol.augment import affine_transform
from streamvol.augment._kernels import chain, resample
from streamvol.augment._kernels._cache import sources_sha256, update_records
from streamvol.augment._kernels.params import intensity, sampling

from ..guard import run_guarded

KERNELS = Path(resample.__file__).parent
RECORDING = {"chain": chain, "resample": resample}  # the modules that inline from other files


def _sibling_imports(path: Path) -> set[str]:
    """The ``_kernels`` modules that ``path`` imports (``_cache`` aside: it compiles nothing)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:3] == ["streamvol", "augment", "_kernels"] and len(parts) == 4:
                found.add(parts[3])
    return found - {"_cache"}


@pytest.mark.parametrize("name", sorted(RECORDING))
def test_recorded_hashes_are_current_and_caching_is_on(name):
    module = RECORDING[name]
    current = sources_sha256(KERNELS, module.INLINED)
    assert current == module.INLINED_SHA256, (
        f"a file that {name}.py inlines from changed (until its record says so, its kernels "
        "compile afresh in every process): run python -m streamvol.augment._kernels._cache"
    )
    assert module.CACHED


def test_every_file_a_kernel_compiles_in_is_recorded():
    """A kernel module imports from its siblings only what its record covers; the others are
    self-contained, so numba's own per-file cache is enough for them."""
    for path in sorted(KERNELS.glob("*.py")):
        if path.name in ("__init__.py", "_cache.py"):
            continue
        imported = {f"{m}.py" for m in _sibling_imports(path)}
        module = RECORDING.get(path.stem)
        recorded = set(module.INLINED) if module else set()
        assert imported <= recorded, f"{path.name} imports {sorted(imported - recorded)} unrecorded"


def test_updating_the_records_follows_what_each_module_inlines(tmp_path):
    """An edit of noise.py changes the records of chain.py and resample.py, which hashes
    chain.py's record too; one update brings both up to date."""
    folder = tmp_path / "_kernels"
    shutil.copytree(KERNELS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert update_records(folder) == []
    noise = folder / "noise.py"
    noise.write_text(noise.read_text() + "\n# an edit\n")
    assert update_records(folder) == ["chain.py", "resample.py"]
    for name, module in RECORDING.items():
        text = (folder / f"{name}.py").read_text()
        assert f'INLINED_SHA256 = "{sources_sha256(folder, module.INLINED)}"' in text
    assert update_records(folder) == []


def test_parameters_of_any_python_number_type_compile_one_kernel():
    assert numba.typeof(intensity(offset=1, gamma=2, do_gamma=1)) == numba.typeof(intensity())
    assert numba.typeof(sampling(order=np.int32(0), cval=3, has_mask=np.bool_(True))) == (
        numba.typeof(sampling())
    )
    vol = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    affine_transform(vol, np.eye(4), cval=0.5)
    before = len(resample._rows.signatures)
    affine_transform(vol, np.eye(4), cval=1, order=0)
    assert len(resample._rows.signatures) == before


# a kernel that inlines the noise hash (copy_rows) against the noise module's own field: equal
# whenever the kernel was compiled from the current noise.py
_PROBE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import streamvol
    from streamvol.augment._kernels import chain
    from streamvol.augment._kernels.noise import fill_normal, noise_key
    from streamvol.augment._kernels.params import intensity

    assert streamvol.__file__.startswith(sys.argv[1]), streamvol.__file__
    key = np.uint64(noise_key(7))
    out = np.empty((3, 4, 5), np.float32)
    view = np.zeros((3, 4, 5), np.float32)
    chain.copy_rows(view, None, out, intensity(noise_std=1.0, do_noise=True), key)
    field = np.empty_like(out)
    fill_normal(field, key)
    print(chain.CACHED, np.array_equal(out, field), float(out[1, 2, 3]))
    """
)


def test_an_edited_helper_reaches_the_kernels_of_a_fresh_process(tmp_path):
    """The hazard itself: with a warm cache, edit the noise hash in noise.py (another file than
    the kernel's); a fresh process must compute the new noise in the kernel too."""
    root = tmp_path / "src"
    shutil.copytree(
        Path(resample.__file__).parents[3] / "streamvol",
        root / "streamvol",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    env_code = (
        "import os, runpy, sys; "
        f"os.environ['NUMBA_CACHE_DIR'] = {str(tmp_path / 'cache')!r}; "
        f"sys.path.insert(0, {str(root)!r}); sys.argv = ['probe', {str(root)!r}]; "
        f"runpy.run_path({str(probe)!r}, run_name='__main__')"
    )

    def run() -> list[str]:
        result = run_guarded(["-c", env_code], limit=240)
        assert result.returncode == 0, result.stdout
        return result.stdout.split()[-3:]

    first = run()
    assert first[:2] == ["True", "True"]  # cached, and the kernel agrees with noise.py
    assert run() == first  # served from the cache now
    noise = root / "streamvol" / "augment" / "_kernels" / "noise.py"
    text = noise.read_text()
    assert "GOLDEN32 = 0x9E3779B9" in text
    noise.write_text(text.replace("GOLDEN32 = 0x9E3779B9", "GOLDEN32 = 0x9E3779B1"))
    edited = run()
    # the record no longer matches: no cache, so the kernel compiled from the edited noise.py
    assert edited[:2] == ["False", "True"]
    assert edited[2] != first[2]
