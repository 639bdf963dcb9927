"""Meta-learning benchmark: meta-training throughput and memory, and few-shot accuracy on Omniglot.

**Throughput** (always): conv-4 (64 filters), 5-way 1-shot, ``--queries`` query images per class, 28x28 inputs,
meta-batch 32, 1 inner step, Adam meta-step included. Variants, measured in this run one after the other, each in
its own process (so peak memory is its own): this lecture's MAML (second order), first-order MAML and ANIL, each
as a per-task loop and vectorised over tasks with ``torch.func.vmap``; and a straightforward per-task reference
loop written the way course notebooks do (``torch.autograd.grad(create_graph=True)`` on a module, a backward pass
per task), second and first order. Reported: median seconds per meta-step over ``--steps`` steps after
``--warmup`` steps, tasks/s, and peak memory above the process's level before the first step (CPU: peak RSS; GPU:
``torch.cuda.max_memory_allocated``).

**Accuracy** (``--omniglot DIR`` with ``images_background.zip`` / ``images_evaluation.zip``): the standard
protocol (background alphabets for meta-training and validation, evaluation alphabets for meta-test, rotated
classes added, 28x28), HW15's schedule (inner lr 0.4, meta-batch 32, 1 inner step in training and 3 at test, Adam
meta lr 1e-3, 1 query image per class), ``--iterations`` meta-steps, then accuracy ± 95% CI over 600 meta-test
tasks. Reference (Finn et al. 2017, table 1): MAML 98.7 ± 0.4% (5-way 1-shot) and 99.9 ± 0.1% (5-way 5-shot)
after 60,000 meta-iterations.

Run: ``.venv/bin/python benchmarks/meta_learning.py [--omniglot ../shared/data/omniglot] [--device cuda]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from runner import fit_and_test

from lecture_modules.meta_learning.core import ConvNet, gradient_carrier, meta_gradient_per_task, over_tasks
from lecture_modules.meta_learning.maml import maml_task

VARIANTS = {  # name -> (implementation, first_order, head_only, vectorize)
    "MAML (2nd order), per-task loop": ("lecture", False, False, False),
    "MAML (2nd order), vmap": ("lecture", False, False, True),
    "first-order MAML, per-task loop": ("lecture", True, False, False),
    "first-order MAML, vmap": ("lecture", True, False, True),
    "ANIL (2nd order), per-task loop": ("lecture", False, True, False),
    "ANIL (2nd order), vmap": ("lecture", False, True, True),
    "reference loop, 2nd order": ("reference", False, False, False),
    "reference loop, 1st order": ("reference", True, False, False),
}


def reference_meta_step(net: ConvNet, batch, lr: float, first_order: bool) -> None:
    """The straightforward way: per task, gradients with torch.autograd.grad, fast weights as a dict, a forward
    through torch.func.functional_call, and a backward pass per task accumulating into .grad."""
    params = dict(net.named_parameters())
    tasks = len(batch[0])
    for x_s, y_s, x_q, y_q in zip(*batch, strict=True):
        loss = F.cross_entropy(torch.func.functional_call(net, params, (x_s,)), y_s)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        fast = {k: w - lr * g for (k, w), g in zip(params.items(), grads, strict=True)}
        query = F.cross_entropy(torch.func.functional_call(net, fast, (x_q,)), y_q) / tasks
        query.backward()


def lecture_meta_step(net: ConvNet, batch, lr: float, first_order: bool, head_only: bool, vectorize: bool) -> None:
    """What the lecture's training step does (``MAML.meta_loss``), then backward."""
    task = partial(maml_task, net, steps=1, lr=lr, first_order=first_order, head_only=head_only)
    params = dict(net.named_parameters())
    if vectorize:
        losses, _ = over_tasks(task, params, batch, vectorize=True)
        losses.mean().backward()
    else:
        _, _, grads = meta_gradient_per_task(task, params, batch)
        gradient_carrier(params, grads).backward()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_variant(name: str, args) -> dict:
    """One variant in this process: median seconds per meta-step and the peak memory it added."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    impl, first_order, head_only, vectorize = VARIANTS[name]
    torch.manual_seed(0)
    net = ConvNet((1, 28, 28), args.ways).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t, n, k, q = args.meta_batch, args.ways, args.shots, args.queries
    batch = (
        torch.rand(t, n * k, 1, 28, 28, device=device),
        torch.arange(n, device=device).repeat_interleave(k).repeat(t, 1),
        torch.rand(t, n * q, 1, 28, 28, device=device),
        torch.arange(n, device=device).repeat_interleave(q).repeat(t, 1),
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    base = (
        peak_memory_mb(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        opt.zero_grad()
        if impl == "reference":
            reference_meta_step(net, batch, 0.4, first_order)
        else:
            lecture_meta_step(net, batch, 0.4, first_order, head_only, vectorize)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"name": name, "seconds": seconds, "tasks_per_s": t / seconds, "peak_mb": peak_memory_mb(device) - base}


def throughput(args) -> list[dict]:
    rows = []
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", name, "--device", args.device, "--threads", str(args.threads)]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--meta-batch", str(args.meta_batch)]
        cmd += ["--queries", str(args.queries), "--shots", str(args.shots), "--ways", str(args.ways)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def omniglot(args, config: str, shots: int, iterations: int, tmp: Path) -> dict:
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    start = time.perf_counter()
    cli = fit_and_test(
        f"{config}.yaml",
        "--data.init_args.source",
        "datamodules.few_shot_sources.OmniglotSource",
        "--data.init_args.source.root",
        args.omniglot,
        "--data.init_args.rotations",
        "true",
        "--data.init_args.shots",
        str(shots),
        "--data.init_args.queries",
        "1",
        "--data.init_args.meta_batch_size",
        "32",
        "--data.init_args.episodes_per_epoch",
        str(32 * iterations),
        "--data.init_args.test_episodes",
        "600",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.accelerator",
        accelerator,
        "--model.init_args.vectorize",
        str(args.vectorize).lower(),
        root=tmp / f"{config}-{shots}shot",
    )
    metrics = cli.trainer.callback_metrics
    return {
        "method": config,
        "setting": f"5-way {shots}-shot",
        "iterations": iterations,
        "acc": float(metrics["test/acc"]),
        "ci95": float(metrics["test/acc_ci95"]),
        "minutes": (time.perf_counter() - start) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--steps", type=int, default=5, help="timed meta-steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed meta-steps first")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=1, help="query images per class (1 as in the paper, HW15)")
    parser.add_argument("--omniglot", help="folder with images_background.zip / images_evaluation.zip")
    parser.add_argument(
        "--runs", default="maml:1:300", help="Omniglot runs, comma-separated config:shots:meta-iterations"
    )
    parser.add_argument("--vectorize", action="store_true", help="Omniglot runs map tasks with torch.func.vmap")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process measuring one variant
        print(json.dumps(run_variant(args.variant, args)))
        return
    torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else cpu_name()
    results = {"device": device, "threads": args.threads, "throughput": [], "omniglot": []}
    setting = f"conv-4, {args.ways}-way {args.shots}-shot, {args.queries} query/class, meta-batch {args.meta_batch}"
    if not args.skip_throughput:
        results["throughput"] = throughput(args)
        ref = next(r for r in results["throughput"] if r["name"] == "reference loop, 2nd order")
        print(f"\nMeta-training throughput on {device} ({args.threads} thread(s)); {setting}, 1 inner step;")
        print(f"median of {args.steps} meta-steps after {args.warmup} warm-up\n")
        print("| variant | s / meta-step | tasks/s | vs reference 2nd order | peak memory (MiB) |")
        print("|---|---:|---:|---:|---:|")
        for r in results["throughput"]:
            speedup = ref["seconds"] / r["seconds"]
            print(
                f"| {r['name']} | {r['seconds']:.3f} | {r['tasks_per_s']:.1f} | {speedup:.2f}x | {r['peak_mb']:.0f} |"
            )
    if args.omniglot:
        with tempfile.TemporaryDirectory() as tmp:
            for run in args.runs.split(","):
                config, shots, iterations = run.split(":")
                results["omniglot"].append(omniglot(args, config, int(shots), int(iterations), Path(tmp)))
                if args.out:  # after every run, so a wall-clock cap does not lose the finished ones
                    Path(args.out).write_text(json.dumps(results, indent=2))
                print(f"  {results['omniglot'][-1]}", file=sys.stderr, flush=True)
        print(f"\nOmniglot accuracy on {device}, 600 meta-test tasks (evaluation alphabets), 3 inner steps at test\n")
        print("| method | setting | meta-iterations | accuracy ± 95% CI | wall (min) |")
        print("|---|---|---:|---:|---:|")
        for r in results["omniglot"]:
            acc = f"{100 * r['acc']:.1f} ± {100 * r['ci95']:.1f}%"
            print(f"| {r['method']} | {r['setting']} | {r['iterations']} | {acc} | {r['minutes']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
