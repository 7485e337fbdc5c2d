"""`edge-namm export`: a scorer file as an ONNX graph (raw features in, scores out)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_namm.cli.errors import friendly
from edge_namm.cli.options import file_option


@click.command()
@file_option(
    "--scorer", "scorer_path", help="Scorer file (.json; default: the shipped default scorer)."
)
@file_option("--out", "out_path", required=True, help="Where to write the .onnx file.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (>= 13).")
@friendly
def export(scorer_path: str | None, out_path: str, opset: int) -> None:
    """Export a scorer to ONNX (checked with onnx.checker) and verify it against numpy."""
    import numpy as np

    from edge_namm.scorers.default import default_scorer_path
    from edge_namm.scorers.file import load_scorer
    from edge_namm.scorers.onnx_export import export_onnx
    from edge_namm.scorers.runtime import load_onnx_scorer

    source = Path(scorer_path) if scorer_path else default_scorer_path()
    scorer = load_scorer(source)
    export_onnx(scorer, out_path, opset=opset)
    from edge_namm.scorers.base import SPECTROGRAM

    x = np.random.default_rng(0).normal(size=(6, 64, scorer.n_features)).astype(np.float32)
    x[..., SPECTROGRAM] = np.abs(x[..., SPECTROGRAM]) * scorer.norm_std + scorer.norm_mean
    err = float(np.abs(load_onnx_scorer(out_path).score(x) - scorer.score(x)).max())
    if not err <= 1e-4:
        raise click.ClickException(f"exported graph disagrees with numpy (max error {err:.2e})")
    click.echo(
        f"wrote {out_path} ({scorer.type_name}, {scorer.n_params} params, opset {opset}; "
        f"max |onnx - numpy| = {err:.1e} on random features)"
    )
