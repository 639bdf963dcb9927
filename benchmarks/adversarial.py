"""Adversarial attacks and defences (lecture 10, issue 24): white-box and transfer attacks, adversarial training.

On the embedded digits (16x16, the split of configs/classification.yaml) and, with ``--mnist DIR``, on MNIST IDX
files, for each seed:

1. Trains a zoo with plain PyTorch loops (the networks of the lectures, ``lecture_modules.nets``): the victim CNN
   [32, 64, 128] (the shipped digits CNN's architecture), held-out victims of other families (an MLP [256, 128] and
   a narrow CNN [16, 16, 32]), and proxies (a CNN [16, 32, 32] and an MLP [128]).
2. White box on the victim CNN: FGSM, I-FGSM, PGD-40, MI-FGSM, DI2-FGSM at each L-inf eps; PGD-L2 and C&W at an
   L2 budget.
3. Transfer: FGSM, I-FGSM, MI-FGSM and DI2-FGSM crafted on one proxy and on the logit ensemble of both, at the
   transfer eps, scored on every victim.
4. Adversarial training at the AT eps and a fixed epoch budget: PGD-7 (Madry et al.) and FGSM with random start
   (Wong et al.), clean accuracy and PGD-40 robust accuracy.
5. Speed: PGD-40 images per second on the victim CNN.

``--throughput`` instead times PGD-40 (L-inf, random start) side by side, ours and torchattacks 3.5.1 on the same
victim CNN, batch and standardisation, alternating the two within each repetition; it prints the medians after
warm-up, the ratio ours / torchattacks, and how far the two adversarial batches (same seed) agree.

Budgets are [0, 1] pixel units through the data's standardisation. Prints a markdown table (mean ± std over seeds)
and writes it to ``--out``.

    .venv/bin/python benchmarks/adversarial.py --seeds 0                     # digits, 1 seed
    .venv/bin/python benchmarks/adversarial.py --mnist ../shared/data/mnist  # + MNIST, 3 seeds
    .venv/bin/python benchmarks/adversarial.py --throughput --batch 64 --reps 7  # ours vs torchattacks, digits
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, so it runs from anywhere

from machine import cpu_name  # benchmarks/ is on sys.path when a script runs
from torch import nn

from datamodules.image import ImageDataModule
from datamodules.sources import IDXSource
from lecture_modules.adversarial import core
from lecture_modules.adversarial.defences import InputTransformDefence, make_defence
from lecture_modules.nets import NetSpec

ZOO = {
    "victim_cnn": NetSpec(kind="cnn", widths=[32, 64, 128]),
    "mlp": NetSpec(kind="mlp", widths=[256, 128]),
    "narrow_cnn": NetSpec(kind="cnn", widths=[16, 16, 32]),
    "proxy_cnn": NetSpec(kind="cnn", widths=[16, 32, 32]),
    "proxy_mlp": NetSpec(kind="mlp", widths=[128]),
}
VICTIMS, PROXIES = ["victim_cnn", "mlp", "narrow_cnn"], ["proxy_cnn", "proxy_mlp"]
SETTINGS = {  # per data set: L-inf budgets (white box, defences), L2 budget, transfer eps, AT eps and epochs
    "digits": {"eps": [0.05, 0.1], "l2": 1.0, "transfer": [0.05, 0.1], "at": 0.1, "epochs": 15, "at_epochs": 10},
    "mnist": {"eps": [0.1, 0.3], "l2": 2.0, "transfer": [0.1, 0.2], "at": 0.3, "epochs": 3, "at_epochs": 3},
}
TEST_IMAGES = {"digits": None, "mnist": 1000}  # None: the whole test split (360 digits)
DEFENCES = {"digits": [("jpeg", 75), ("bit_depth", 3), ("median", 3)], "mnist": [("jpeg", 75), ("bit_depth", 1),
            ("median", 3)]}  # fmt: skip
REFERENCE = (
    "Madry et al. 2018 (MNIST, eps 0.3): standard CNN near 0% under PGD; PGD-AT about 89% against their strongest "
    "white-box attack. HW10 reproductions (CIFAR-10, one proxy): 62.7 -> 49.2 -> 34.1 -> 25.9% victim accuracy for "
    "FGSM -> I-FGSM -> MI -> DIM, 5.7% from a 6-model ensemble; Kurakin et al. 2017: iterative attacks may transfer "
    "worse than FGSM. Xu et al. 2018 (feature squeezing), Athalye et al. 2018: input transformations that mask "
    "gradients fall to BPDA."
)
SUCCESS = " | success"  # the key suffix of an attack success rate next to the accuracy of the same key


def data_for(name: str, root: str | None, seed: int) -> tuple[ImageDataModule, core.Normalize]:
    source = IDXSource(root) if name == "mnist" else None
    data = ImageDataModule(source=source, image_size=16 if name == "digits" else None, batch_size=64, seed=0)
    data.setup("fit")
    torch.manual_seed(seed)
    mean, std = data.pixel_stats
    return data, core.Normalize(mean.flatten(), std.flatten())


def train(
    spec: NetSpec,
    data,
    normalize,
    epochs: int,
    attack: str | None = None,
    eps: float = 0.0,
    fgsm_step: float = 1.25,
    warmup_epochs: float = 0.0,
):
    """Adam 3e-3 with cosine decay; ``attack``: ``pgd`` (PGD-7, Madry) or ``fgsm_rs`` (Wong et al.: one step of
    ``fgsm_step`` eps from a uniform start) training; ``warmup_epochs``: eps grows linearly from 0 over that many
    epochs (then stays)."""
    x_train, y_train = data.train_dataloader().dataset.tensors
    net = spec.build(tuple(x_train.shape[1:]), 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    per_epoch = (len(y_train) + 63) // 64
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(y_train)).split(64):
            x, y = x_train[idx], y_train[idx]
            if attack is not None:
                x01 = normalize.inverse(x)
                e = eps * min(1.0, step / (warmup_epochs * per_epoch)) if warmup_epochs > 0 else eps
                k, alpha = (7, 2.5 * e / 7) if attack == "pgd" else (1, fgsm_step * e)
                if e > 0:
                    x = normalize(core.pgd(net, x01, y, eps=e, steps=k, alpha=alpha, normalize=normalize))
            step += 1
            net.train()
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
            scheduler.step()
    return net.eval()


def predict(net, normalize, x01: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(normalize(chunk)).argmax(1) for chunk in x01.split(500)])


def accuracy(net, normalize, x01: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(net, normalize, x01) == y).float().mean().item()


def scored(net, normalize, x_adv, y, clean_pred) -> tuple[float, float]:
    """Accuracy on ``x_adv`` and the attack success rate (of the images ``net`` got right, the fraction flipped)."""
    adv_pred = predict(net, normalize, x_adv)
    succeeded, eligible = core.attack_success(clean_pred, adv_pred, y)
    return (adv_pred == y).float().mean().item(), succeeded[eligible].float().mean().item()


def put(row: dict, key: str, result: tuple[float, float]) -> None:
    row[key], row[key + SUCCESS] = result


def white_box(net, normalize, x01, y, setting) -> dict[str, float]:
    clean = predict(net, normalize, x01)
    out = {"clean": (clean == y).float().mean().item()}
    gen = torch.Generator().manual_seed(0)
    for eps in setting["eps"]:
        attacks = {
            "FGSM": (core.fgsm, {}),
            "I-FGSM (10)": (core.ifgsm, {"steps": 10}),
            "PGD-40": (core.pgd, {"steps": 40, "alpha": eps / 10, "generator": gen}),
            "MI-FGSM (10)": (core.mifgsm, {"steps": 10}),
            "DI2-FGSM (10)": (core.difgsm, {"steps": 10, "generator": gen}),
        }
        for k, (attack, kw) in attacks.items():
            adv = attack(net, x01, y, eps=eps, normalize=normalize, **kw)
            put(out, f"{k} eps {eps:g}", scored(net, normalize, adv, y, clean))
    l2 = setting["l2"]
    adv = core.pgd(net, x01, y, eps=l2, steps=40, norm="l2", normalize=normalize, generator=gen)
    put(out, f"PGD-L2-40 eps {l2:g}", scored(net, normalize, adv, y, clean))
    cw = core.carlini_wagner_l2(net, x01, y, steps=50, search_steps=5, normalize=normalize)
    put(out, f"C&W L2 eps {l2:g}", scored(net, normalize, core.within_budget(x01, cw, l2, "l2"), y, clean))
    return out


def transfer(zoo, normalize, x01, y, eps: float) -> dict[str, float]:
    out = {}
    gen = torch.Generator().manual_seed(0)
    clean = {victim: predict(zoo[victim], normalize, x01) for victim in VICTIMS}
    sources = {"proxy_cnn": zoo["proxy_cnn"], "ensemble": core.Ensemble([zoo[p] for p in PROXIES])}
    for source, proxy in sources.items():
        for name, fn in (
            ("FGSM", core.fgsm),
            ("I-FGSM", core.ifgsm),
            ("MI-FGSM", core.mifgsm),
            ("DI2-FGSM", core.difgsm),
        ):
            kw = {"generator": gen} if fn is core.difgsm else {}
            x_adv = fn(proxy, x01, y, eps=eps, normalize=normalize, **kw)
            for victim in VICTIMS:
                put(out, f"{name} from {source} -> {victim}", scored(zoo[victim], normalize, x_adv, y, clean[victim]))
    return out


def defences(net, normalize, x01, y, name: str) -> dict[str, float]:
    """Each input transformation in front of ``net``: clean accuracy, and PGD-20 (step eps / 8) through it with the
    masked gradient (what a naive white-box attack sees) and with BPDA (Athalye et al.), at each L-inf eps."""
    out = {}
    for kind, strength in DEFENCES[name]:
        transform = make_defence(kind, strength)
        masked = InputTransformDefence(net, transform, normalize=normalize)
        bpda = InputTransformDefence(net, transform, normalize=normalize, bpda=True)
        clean = predict(masked, nn.Identity(), x01)
        label = f"{kind}:{strength}"
        out[f"{label} clean"] = (clean == y).float().mean().item()
        for eps in SETTINGS[name]["eps"]:
            for mode, model in (("masked", masked), ("BPDA", bpda)):
                gen = torch.Generator().manual_seed(0)
                adv = core.pgd(model, x01, y, eps=eps, steps=20, alpha=eps / 8, generator=gen)
                put(out, f"{label} PGD-20 eps {eps:g} {mode}", scored(masked, nn.Identity(), adv, y, clean))
    return out


def throughput(net, normalize, x01, y) -> float:
    start = time.perf_counter()
    core.pgd(net, x01, y, eps=0.1, steps=40, normalize=normalize)
    return len(y) / (time.perf_counter() - start)


def throughput_vs_torchattacks(batch: int, reps: int, warmup: int = 2, eps: float = 0.1) -> list[str]:
    """PGD-40 images/s, ours and torchattacks, on the digits victim CNN (3 epochs: speed does not depend on the
    weights), the same batch, eps, alpha = eps / 10 and standardisation; medians over ``reps`` after ``warmup``."""
    import torchattacks

    data, normalize = data_for("digits", None, 0)
    net = train(ZOO["victim_cnn"], data, normalize, epochs=3)
    x_test, y_test = data.test_dataloader().dataset.tensors
    x01, y = normalize.inverse(x_test[:batch]), y_test[:batch]
    mean, std = normalize.mean.flatten().tolist(), normalize.std.flatten().tolist()
    attack = torchattacks.PGD(net, eps=eps, alpha=eps / 10, steps=40, random_start=True)
    attack.set_normalization_used(mean, std)  # takes and returns standardised images

    def ours(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return core.pgd(net, x01, y, eps=eps, steps=40, alpha=eps / 10, normalize=normalize, generator=gen)

    def theirs(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return normalize.inverse(attack(normalize(x01), y))

    times: dict[str, list[float]] = {"ours": [], "torchattacks": []}
    for rep in range(warmup + reps):
        for name, fn in (
            (("ours", ours), ("torchattacks", theirs)) if rep % 2 else (("torchattacks", theirs), ("ours", ours))
        ):
            start = time.perf_counter()
            fn(rep)
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    # Same seed, same start; but we carry delta and evaluate x + delta, torchattacks carries x_adv: float32
    # rounding differs by an ulp, which flips sign(g) where a gradient component is near zero (on a trained CNN
    # with max pooling a few pixels a batch), and those pixels then walk apart. Report how many, and the accuracy.
    x_ours, x_theirs = ours(0), theirs(0)
    differ = ((x_ours - x_theirs).abs() > 1e-5).float().mean().item()
    robust = {k: accuracy(net, normalize, v, y) for k, v in (("ours", x_ours), ("torchattacks", x_theirs))}
    rate = {k: batch / statistics.median(v) for k, v in times.items()}
    return [
        f"PGD-40 throughput, digits victim CNN {ZOO['victim_cnn'].widths}, batch {batch}, {reps} repetitions after "
        f"{warmup} warm-up (order alternating), torchattacks {torchattacks.__version__}",
        "",
        "| implementation | images/s (median) | min..max |",
        "|---|---:|---:|",
        *(f"| {k} | {rate[k]:.0f} | {batch / max(v):.0f}..{batch / min(v):.0f} |" for k, v in times.items()),
        "",
        f"ratio ours / torchattacks: {rate['ours'] / rate['torchattacks']:.2f}",
        f"same seed: {100 * differ:.2f}% of pixels differ by > 1e-5; robust accuracy at eps {eps:g}: ours "
        f"{100 * robust['ours']:.1f}%, torchattacks {100 * robust['torchattacks']:.1f}%",
    ]


def held_out(name: str, data) -> tuple[torch.Tensor, torch.Tensor]:
    x_test, y_test = data.test_dataloader().dataset.tensors
    n = TEST_IMAGES[name] or len(y_test)
    return x_test[:n], y_test[:n]


def run_attacks(name: str, root: str | None, seed: int) -> dict[str, float]:
    """The zoo, the white-box grid and the defences on the victim CNN, and the transfer matrix."""
    setting = SETTINGS[name]
    data, normalize = data_for(name, root, seed)
    x_test, y = held_out(name, data)
    x01 = normalize.inverse(x_test)
    zoo = {k: train(spec, data, normalize, setting["epochs"]) for k, spec in ZOO.items()}
    row = {f"clean {k}": accuracy(net, normalize, x01, y) for k, net in zoo.items()}
    row.update({f"white box: {k}": v for k, v in white_box(zoo["victim_cnn"], normalize, x01, y, setting).items()})
    for eps in setting["transfer"]:
        row.update({f"transfer eps {eps:g}: {k}": v for k, v in transfer(zoo, normalize, x01, y, eps).items()})
    row.update({f"defence {k}": v for k, v in defences(zoo["victim_cnn"], normalize, x01, y, name).items()})
    row["PGD-40 images/s (victim CNN)"] = throughput(zoo["victim_cnn"], normalize, x01[:256], y[:256])
    return row


def robustness(net, normalize, x01, y, eps: float, label: str) -> dict[str, float]:
    """Clean accuracy and PGD-40 (step eps / 10) with 1 and with 3 restarts (the per-sample worst), with success."""
    clean = predict(net, normalize, x01)
    row = {f"{label}: clean": (clean == y).float().mean().item()}
    for restarts in (1, 3):
        gen = torch.Generator().manual_seed(0)
        adv = core.pgd(
            net, x01, y, eps=eps, steps=40, alpha=eps / 10, restarts=restarts, normalize=normalize, generator=gen
        )
        put(row, f"{label}: PGD-40 x{restarts}", scored(net, normalize, adv, y, clean))
    return row


def run_adversarial_training(name: str, root: str | None, seed: int) -> dict[str, float]:
    """PGD-7 (Madry et al.) and FGSM-RS (Wong et al.) training of the victim CNN at the AT eps, the same epochs;
    scored by PGD-40 (step eps / 10) with 1 and with 3 restarts (the per-sample worst)."""
    setting = SETTINGS[name]
    data, normalize = data_for(name, root, seed)
    x_test, y = held_out(name, data)
    x01, eps = normalize.inverse(x_test), setting["at"]
    row = {}
    for attack in ("pgd", "fgsm_rs"):
        start = time.perf_counter()
        net = train(ZOO["victim_cnn"], data, normalize, setting["at_epochs"], attack=attack, eps=eps)
        label = f"AT {attack} eps {eps:g}, {setting['at_epochs']} epochs"
        row[f"{label}: train seconds"] = time.perf_counter() - start
        row.update(robustness(net, normalize, x01, y, eps, label))
    return row


def run_fast_at_fixes(name: str, root: str | None, seed: int) -> dict[str, float]:
    """FGSM-RS at the AT eps and epochs with the two remedies Wong et al.'s failure list points to: a smaller step
    (alpha = eps instead of 1.25 eps) and eps grown linearly from 0 over the first epoch; scored as in ``at``."""
    setting = SETTINGS[name]
    data, normalize = data_for(name, root, seed)
    x_test, y = held_out(name, data)
    x01, eps = normalize.inverse(x_test), setting["at"]
    row = {}
    for label, kw in (("alpha 1.0 eps", {"fgsm_step": 1.0}), ("eps ramp over epoch 1", {"warmup_epochs": 1.0})):
        start = time.perf_counter()
        net = train(ZOO["victim_cnn"], data, normalize, setting["at_epochs"], attack="fgsm_rs", eps=eps, **kw)
        label = f"AT fgsm_rs eps {eps:g}, {setting['at_epochs']} epochs, {label}"
        row[f"{label}: train seconds"] = time.perf_counter() - start
        row.update(robustness(net, normalize, x01, y, eps, label))
    return row


PARTS = {"attacks": run_attacks, "at": run_adversarial_training, "fast_at_fixes": run_fast_at_fixes}


def fmt(values: list[float], key: str) -> str:
    scale = 1 if ("seconds" in key or "images/s" in key) else 100
    vals = [scale * v for v in values if v == v]  # NaN (no eligible image) is left out
    if not vals:
        return "n/a"
    spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.1f} ± {spread:.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"


def merge(folder: Path) -> str:
    """One markdown table per data set and part from the JSON pieces in ``folder``: mean ± std over seeds;
    accuracy and, where measured, the attack success rate side by side."""
    pieces: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        piece = json.loads(path.read_text())
        pieces.setdefault((piece["dataset"], piece["part"]), []).append(piece)
    lines = []
    for (dataset, part), runs in sorted(pieces.items()):
        seeds = sorted(r["seed"] for r in runs)
        machines = sorted({f"{r['machine']}, {r['threads']} thread(s), torch {r['torch']}" for r in runs})
        lines += [f"## {dataset}, {part} (seeds {seeds})", "", f"machine: {'; '.join(machines)}", ""]
        lines += ["| measurement | accuracy % (or as named) | attack success % |", "|---|---:|---:|"]
        for key in runs[0]["row"]:
            if key.endswith(SUCCESS):
                continue
            values = [r["row"][key] for r in runs]
            rate = fmt([r["row"][key + SUCCESS] for r in runs], key) if key + SUCCESS in runs[0]["row"] else ""
            lines.append(f"| {key} | {fmt(values, key)} | {rate} |")
        lines.append("")
    return "\n".join([*lines, "Reference: " + REFERENCE, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", help="folder with MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")
    parser.add_argument("--dataset", choices=list(SETTINGS), default="digits")
    parser.add_argument("--part", choices=list(PARTS), nargs="+", default=["attacks", "at"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--throughput", action="store_true", help="only PGD-40 speed, ours vs torchattacks")
    parser.add_argument("--batch", type=int, default=64, help="--throughput: images per batch")
    parser.add_argument("--reps", type=int, default=7, help="--throughput: timed repetitions")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench/adversarial"), help="one JSON per piece")
    parser.add_argument("--merge", type=Path, help="only merge the JSON pieces in this folder into markdown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        print(merge(args.merge))
        return
    if args.throughput:
        header = f"machine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}"
        print("\n".join([header, "", *throughput_vs_torchattacks(args.batch, args.reps)]))
        return
    if args.dataset == "mnist" and not args.mnist:
        parser.error("--dataset mnist needs --mnist DIR")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for part in args.part:
            row = PARTS[part](args.dataset, args.mnist, seed)
            piece = {"dataset": args.dataset, "part": part, "seed": seed, "machine": cpu_name(),
                     "threads": args.threads, "torch": torch.__version__, "row": row}  # fmt: skip
            path = args.out_dir / f"{args.dataset}-{part}-seed{seed}.json"
            path.write_text(json.dumps(piece, indent=1))
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
