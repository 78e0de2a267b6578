"""CPU training steps with glibc's default allocator settings, or with freed memory kept in the
process (``streamvol.core.heap.keep_freed_memory``, which the trainer applies on the CPU); a
benchmark, not a test.

A 3D network's activations are hundreds of MB a batch. glibc maps every allocation past its
mmap threshold (at most 32 MB) afresh and unmaps it when freed, so each step faults in and
zeroes gigabytes of new pages: system time, not arithmetic. Each case runs forward, backward
and an AdamW step on random input in its own process, default and kept interleaved,
``--repeats`` times: seconds a step, user and system CPU seconds a step, minor page faults a
step, and the process's peak resident memory.

    python benchmarks/cpu_malloc.py [--repeats 2] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

from _results import add_out, publish

# (model, num_classes, crop, batch): the default segmentation and classification models at
# the README's realistic sizes, and the demo's small spot classifier
CASES = {
    "unet3d 48^3": ("unet3d", 2, (48, 48, 48), 16),
    "unet3d 64^3": ("unet3d", 2, (64, 64, 64), 16),
    "se_resnet3d 48^3": ("se_resnet3d", 7, (48, 48, 48), 16),
    "simple_cnn 9x11x11": ("simple_cnn", 2, (9, 11, 11), 32),
}
STEPS = {"simple_cnn 9x11x11": 200}  # a few ms a step: more of them; the rest: --steps


def run_case(case: str, keep: bool, steps: int) -> dict[str, float]:
    """One timing in this process: warm-up steps (1, or 10 before many), then ``steps``."""
    import resource
    import time

    import torch

    from streamvol import models
    from streamvol.core.heap import keep_freed_memory

    applied = keep_freed_memory() if keep else False
    name, classes, crop, batch = CASES[case]
    options = {"input_shape": crop} if name == "simple_cnn" else {}
    torch.manual_seed(0)
    model = models.build(name, num_classes=classes, **options)
    x = torch.randn(batch, 1, *crop)
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        loss = model(x).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(1 if steps < 10 else 10):
        step()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "applied": applied,
        "step_s": seconds / steps,
        "user_s": (after.ru_utime - before.ru_utime) / steps,
        "sys_s": (after.ru_stime - before.ru_stime) / steps,
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
        "peak_mb": after.ru_maxrss / 1024,
    }


def _child(case: str, keep: bool, steps: int) -> dict[str, float]:
    steps = STEPS.get(case, steps)
    args = [sys.executable, __file__, "--child", case, "--steps", str(steps)]
    args += ["--keep"] if keep else []
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    add_out(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.keep, args.steps)))
        return
    rows = []
    for case in CASES:
        timings: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for keep in (False, True):
                timings[keep].append(_child(case, keep, args.steps))
                print(case, "kept" if keep else "default", timings[keep][-1], flush=True)
        med = {
            keep: {k: statistics.median(t[k] for t in ts) for k in ts[0] if k != "applied"}
            for keep, ts in timings.items()
        }
        rows.append((case, med[False], med[True]))
    cores = os.cpu_count()
    lines = [
        f"CPU training steps, glibc's default allocator settings against freed memory kept "
        f"(`benchmarks/cpu_malloc.py`, {platform.processor() or platform.machine()}, {cores} "
        f"cores, medians of {args.repeats} processes each, {args.steps} steps after 1; "
        f"simple_cnn: {STEPS['simple_cnn 9x11x11']} after 10):",
        "",
        "| case | s/step default | s/step kept | speed-up | sys s/step default / kept "
        "| page faults/step default / kept | peak RSS MB default / kept |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, d, k in rows:
        lines.append(
            f"| {case} | {d['step_s']:.3g} | {k['step_s']:.3g} | "
            f"{d['step_s'] / k['step_s']:.2f}x | {d['sys_s']:.2f} / {k['sys_s']:.2f} | "
            f"{d['faults']:,.0f} / {k['faults']:,.0f} | {d['peak_mb']:,.0f} / {k['peak_mb']:,.0f} |"
        )
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
