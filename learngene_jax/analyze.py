"""python -m learngene_jax.analyze linearity --checkpoint PATH [--out DIR]

The TLEG paper's observation, measurable on any ViT: how close a trained Transformer's per-layer weights lie to
a line in depth. For each block param (e.g. qkv/kernel) the L per-layer tensors are flattened into the rows of
W (L × P) and two fits are reported:

- `r2_line`: the best line with free positions, θ_l ≈ θ_B + c_l·θ_A — the share of the variance of W around its
  mean that its first principal component explains (σ₁² / Σσ²);
- `r2_depth`: the line at the TLEG positions c_l = l/L, θ_B and θ_A fitted by least squares:
  1 − Σ‖θ_l − θ̂_l‖² / Σ‖θ_l − θ̄‖².

Both are 1 for a TLEG aux model (exactly linear) and about 1/(L−1) and lower for independent random layers.
A PCA trajectory plot shows each param's layers projected on its first two principal components.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax import stages
from learngene_jax.errors import UserError, fail, run


def line_fits(layers: np.ndarray) -> dict[str, Any]:
    """Fits for one param stacked over depth (L, ...): r2_line, r2_depth and the 2-D PCA trajectory."""
    w = np.asarray(layers, np.float64).reshape(layers.shape[0], -1)
    depth = w.shape[0]
    if depth < 3:
        fail(UserError, f"a line through {depth} layers is always exact: linearity needs depth >= 3")
    centered = w - w.mean(0, keepdims=True)
    total = float((centered**2).sum())
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    # identical layers (e.g. untrained biases) have no spread to explain: the fit is undefined, not perfect
    r2_line = float(s[0] ** 2 / total) if total > 0 else float("nan")
    coef = np.arange(depth) / depth
    design = np.stack([np.ones(depth), coef], 1)  # θ_l = θ_B + c_l θ_A
    solution, *_ = np.linalg.lstsq(design, w, rcond=None)
    residual = float(((w - design @ solution) ** 2).sum())
    r2_depth = 1.0 - residual / total if total > 0 else float("nan")
    trajectory = (u[:, :2] * s[:2]).tolist()
    return {"r2_line": r2_line, "r2_depth": r2_depth, "trajectory": trajectory, "depth": depth}


def stacked_block_params(params: dict[str, Any]) -> dict[str, np.ndarray]:
    """{'qkv/kernel': (L, ...) array, ...} from a ViT-layout param tree (blocks stacked on axis 0)."""
    if "blocks" not in params or not isinstance(params["blocks"], dict):
        fail(UserError, "no stacked 'blocks' in these params: linearity needs a ViT-layout model")
    out = {}
    for sub, leaves in params["blocks"].items():
        if not isinstance(leaves, dict) or not all(hasattr(v, "shape") for v in leaves.values()):
            fail(UserError, f"blocks/{sub} is not a per-layer sub-layer (is this an aux model? expand it first)")
        for name, value in leaves.items():
            out[f"{sub}/{name}"] = np.asarray(value)
    return out


def load_params_for_analysis(path: str | Path, num_heads: int | None = None) -> tuple[dict[str, Any], str]:
    """Params of a model directory, a gene (its aux model's layers, via expansion at the aux depth), or a
    timm ViT state dict (.pth/.safetensors/.npz); and a description."""
    path = Path(path)
    if path.is_dir():
        from learngene_jax import checkpointing

        kind = checkpointing.read_meta(path).get("kind")
        if kind == "gene":
            from learngene_jax import genes
            from learngene_jax.genes.io import load_gene

            gene = load_gene(path)
            return genes.expand(gene, gene.meta.depth, layout="exact"), f"{gene.meta.method} gene (aux layers)"
        from learngene_jax.models.io import load_model

        model, variables = load_model(path)
        return variables["params"], f"{type(model).__name__} model directory"
    from learngene_jax.convert import state_dict, vit

    model, params = vit.from_timm(state_dict.read_state_dict(path), num_heads=num_heads)
    return params, f"timm ViT state dict ({model.depth} blocks, width {model.width})"


def linearity_report(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """line_fits for every block param."""
    return {name: line_fits(value) for name, value in stacked_block_params(params).items()}


def format_table(report: dict[str, dict[str, Any]]) -> str:
    """Markdown table: param, depth, r2_line, r2_depth."""
    def fmt(value: float) -> str:
        return "— (identical layers)" if value != value else f"{value:.4f}"

    lines = ["| param | layers | R² best line | R² at c = l/L |", "|---|---|---|---|"]
    for name, r in report.items():
        lines.append(f"| {name} | {r['depth']} | {fmt(r['r2_line'])} | {fmt(r['r2_depth'])} |")
    means = linearity_means(report)
    if means is not None:
        count, mean_line, mean_depth = means
        lines.append(f"| **mean** ({count} params with spread) | | {mean_line:.4f} | {mean_depth:.4f} |")
    return "\n".join(lines)


def linearity_means(report: dict[str, dict[str, Any]]) -> tuple[int, float, float] | None:
    """(params whose layers differ, mean r2_line, mean r2_depth) over those params; None if every param's layers
    are identical (R² undefined)."""
    defined = [r for r in report.values() if r["r2_line"] == r["r2_line"]]
    if not defined:
        return None
    return (len(defined), float(np.mean([r["r2_line"] for r in defined])),
            float(np.mean([r["r2_depth"] for r in defined])))


def plot_trajectories(report: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """One panel per param: its layers on the first two principal components, in depth order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        t = np.asarray(report[name]["trajectory"])
        ax.plot(t[:, 0], t[:, 1], "-", color="0.6", lw=1)
        ax.scatter(t[:, 0], t[:, 1], c=np.arange(len(t)), cmap="viridis", s=18, zorder=3)
        ax.set_title(f"{name}\nR² line {report[name]['r2_line']:.3f}", fontsize=8)  # nan: identical layers
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    lin = sub.add_parser("linearity", help="how linear in depth a model's layer weights are")
    lin.add_argument("--checkpoint", required=True, help="model directory, gene directory, or timm ViT state dict")
    lin.add_argument("--num-heads", type=int, default=None, help="for timm state dicts (unused by the analysis)")
    lin.add_argument("--out", default=None, help="directory for linearity.{md,json,png} (default: print only)")
    args = p.parse_args(argv)
    params, what = load_params_for_analysis(args.checkpoint, args.num_heads)
    report = linearity_report(params)
    table = format_table(report)
    print(f"{what}: {args.checkpoint}\n")
    if not args.out:
        print(table)
        return
    stages.write_summary(args.out, {"source": str(args.checkpoint), "what": what, "params": report}, name="linearity",
                         title=f"Layer linearity: {what}", table=table, sections=[f"`{args.checkpoint}`"],
                         plot=lambda path: plot_trajectories(report, path, f"{what}: PCA trajectory of layers "
                                                                           "(colour = depth)"))

if __name__ == "__main__":
    run(main)
