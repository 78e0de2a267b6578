"""The GPU backend's geometry, four ways, on any torch device: speed and error (a benchmark, not a
test).

Each route resamples the same batch of stored blocks (crop + free-rotation margin, float32) to
the output with the same sampled rotations and flips, trilinear, and nothing else (no intensity,
no noise), so only the geometry differs:

- ``streamvol``: the backend's own grid (``_gpu._grid``): kornia's ``normalize_homography3d`` on
  the float64 matrices, the grid written with broadcast elementwise ops, then ``grid_sample``;
- ``kornia warp_affine3d``: kornia's public function, fed each matrix's inverse in (x, y, z)
  order (it inverts that back in float32, then ``F.affine_grid`` and ``grid_sample``);
- ``affine_grid``: the same float64-normalised matrices through ``F.affine_grid`` (kornia's
  composition less its inversion);
- ``hand float64``: the backend before kornia: float64 coordinates of every voxel, normalised,
  cast to float32.

Error: the largest difference from streamvol's CPU ``affine_transform`` (float64 coordinates, as
scipy), over the batch, for blocks with values in [0, 1).

    python benchmarks/gpu_routes.py [--device cuda] [--sizes 64,96] [--batches 8,16]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from streamvol.augment import Augment, BatchParams, Flip, Rotate, affine_transform, stack_params
from streamvol.augment._gpu import _coordinates, _grid, grid_theta
from streamvol.shard.plan import rotation_margin

_SWAP = torch.tensor(np.eye(4)[[2, 1, 0, 3]])


def streamvol_route(src: torch.Tensor, p: BatchParams) -> torch.Tensor:
    return F.grid_sample(src, _grid(p), align_corners=True)


def warp_affine3d_route(src: torch.Tensor, p: BatchParams) -> torch.Tensor:
    from kornia.geometry.transform import warp_affine3d

    swap = _SWAP.to(p.inverse)
    m = (swap @ p.inverse @ swap)[:, :3].to(torch.float32)
    return warp_affine3d(src, m, p.out_shape, flags="bilinear", align_corners=True)


def affine_grid_route(src: torch.Tensor, p: BatchParams) -> torch.Tensor:
    theta = grid_theta(p).to(torch.float32)
    grid = F.affine_grid(theta, [len(p), 1, *p.out_shape], align_corners=True)
    return F.grid_sample(src, grid, align_corners=True)


def hand_route(src: torch.Tensor, p: BatchParams) -> torch.Tensor:
    coords = _coordinates(p, torch.float64)
    norm = [c * (2.0 / (n - 1)) - 1.0 for c, n in zip(coords, p.stored_shape, strict=True)]
    grid = torch.stack(norm[::-1], dim=-1).to(torch.float32)
    return F.grid_sample(src, grid, align_corners=True)


ROUTES: dict[str, Callable[[torch.Tensor, BatchParams], torch.Tensor]] = {
    "streamvol (kornia normalize_homography3d, broadcast grid)": streamvol_route,
    "kornia warp_affine3d (float32 inversion)": warp_affine3d_route,
    "kornia matrix + F.affine_grid": affine_grid_route,
    "hand float64 coordinates (previous backend)": hand_route,
}


def batch(size: int, n: int, device: torch.device, seed: int = 0):
    """``n`` float32 blocks for ``size``^3 crops and their rotation + flip parameters."""
    margin = rotation_margin(size)[0]
    stored = (size + 2 * margin,) * 3
    spec = Augment(rotate=Rotate("free", 180.0), flip=Flip((0.5, 0.5, 0.5)))
    rng = np.random.default_rng(seed)
    blocks = rng.random((n, 1, *stored), dtype=np.float32)
    params = [spec.sample(np.random.default_rng([seed, i]), stored, (size,) * 3) for i in range(n)]
    return torch.from_numpy(blocks).to(device), stack_params(params).to(device), blocks, params


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(route: Callable, src: torch.Tensor, p: BatchParams, seconds: float) -> float:
    """Crops per second: one warm-up call, then calls for ``seconds`` (at least 3)."""
    route(src, p)
    _sync(src.device)
    n, started = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - started < seconds:
        route(src, p)
        n += 1
    _sync(src.device)
    return n * len(p) / (time.perf_counter() - started)


def compare(
    device: torch.device,
    sizes: tuple[int, ...],
    batches: tuple[int, ...],
    seconds: float = 1.0,
    rounds: int = 2,
    check: int = 2,
) -> list[dict]:
    """Rows of (size, batch, route, crops/s (best of ``rounds``), max error on ``check``
    samples)."""
    rows = []
    for size in sizes:
        for n in batches:
            src, p, blocks, params = batch(size, n, device)
            shape = (size,) * 3
            want = np.stack(
                [affine_transform(blocks[i, 0], params[i].matrix, shape) for i in range(check)]
            )
            best = dict.fromkeys(ROUTES, 0.0)
            for _ in range(rounds):  # interleaved, so drifting machine speed hits every route
                for name, route in ROUTES.items():
                    best[name] = max(best[name], rate(route, src, p, seconds))
            for name, route in ROUTES.items():
                got = route(src[:check], p.take(slice(0, check)))[:, 0].cpu().numpy()
                rows.append(
                    {
                        "size": size,
                        "batch": n,
                        "route": name,
                        "crops_per_s": best[name],
                        "max_error": float(np.abs(got - want).max()),
                    }
                )
            del src
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| output | batch | route | crops/s | max error vs float64 |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}^3 | {r['batch']} | {r['route']} | {r['crops_per_s']:.1f} | "
            f"{r['max_error']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="64,96")
    parser.add_argument("--batches", default="8,16")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = compare(
        torch.device(args.device),
        tuple(int(v) for v in args.sizes.split(",")),
        tuple(int(v) for v in args.batches.split(",")),
        args.seconds,
        args.rounds,
    )
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
