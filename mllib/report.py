"""Stage 7: a Markdown report with the training loss curve (PNG) and the evaluation numbers."""

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPORT_NAME = "report.md"
PLOT_NAME = "loss.png"


def read_metrics(metrics_jsonl: Path) -> list[dict]:
    """Parse one JSON record per non-empty line."""
    lines = metrics_jsonl.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_loss(records: list[dict], eval_result: dict, path: Path) -> None:
    """Train loss vs step, with the final val loss and the unigram baseline as horizontal lines.

    Uses a bare Agg `Figure` (not pyplot), so no global backend or figure state is touched.
    """
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([r["step"] for r in records], [r["train_loss"] for r in records], label="train loss")
    ax.axhline(eval_result["val_loss"], color="tab:green", linestyle="--", label="final val loss")
    ax.axhline(eval_result["unigram_val_loss"], color="tab:red", linestyle=":", label="unigram baseline (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def write_report(metrics_jsonl: Path, eval_result: dict, out_dir: Path, title: str) -> dict:
    """Write `out_dir/report.md` and `out_dir/loss.png`; return the file names and headline numbers."""
    records = read_metrics(metrics_jsonl)
    if not records:
        raise ValueError(f"no metrics in {metrics_jsonl}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_loss(records, eval_result, out_dir / PLOT_NAME)
    last = records[-1]
    rows = [
        ("validation loss (nats/token)", f"{eval_result['val_loss']:.4f}"),
        ("validation perplexity", f"{eval_result['val_ppl']:.2f}"),
        ("validation bits/byte", f"{eval_result['val_bits_per_byte']:.4f}"),
        ("unigram baseline loss", f"{eval_result['unigram_val_loss']:.4f}"),
        ("unigram baseline perplexity", f"{eval_result['unigram_val_ppl']:.2f}"),
        ("unigram baseline bits/byte", f"{eval_result['unigram_bits_per_byte']:.4f}"),
        ("evaluated tokens", f"{eval_result['eval_tokens']}"),
        ("final train loss", f"{last['train_loss']:.4f}"),
        ("training steps", f"{last['step']}"),
    ]
    gain = eval_result["unigram_val_loss"] - eval_result["val_loss"]
    lines = [
        f"# {title}",
        "",
        (
            f"The model's validation loss is {abs(gain):.3f} nats/token "
            f"{'below' if gain > 0 else 'above'} the unigram baseline."
        ),
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        f"![training loss]({PLOT_NAME})",
        "",
    ]
    (out_dir / REPORT_NAME).write_text("\n".join(lines), encoding="utf-8")
    return {"report": REPORT_NAME, "plot": PLOT_NAME, "val_loss": eval_result["val_loss"], "gain_over_unigram": gain}
