"""A loss curve as a PNG: what people look at first when they check on a training."""

from __future__ import annotations

from pathlib import Path

from deepspeech_core.workdir.atomic_files import atomic_path


def plot_loss(train: list[float], dev: list[float], path: Path, title: str = "") -> Path:
    """Per-epoch train and dev CTC loss, written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 3.5), dpi=100)
    ax = figure.add_subplot()
    epochs = range(1, len(train) + 1)
    ax.plot(epochs, train, marker="o", label="train")
    if dev:
        ax.plot(range(1, len(dev) + 1), dev, marker="o", label="dev")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("CTC loss")
    ax.set_title(title or "loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)
