"""``nluforge predict``: a finished run's predictions for every row of a CSV, TSV or JSONL file."""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.core.errors import UserError


@app.command("predict")
def predict(
    run: str = typer.Argument(..., help="A finished run directory."),
    input_file: Path = typer.Option(..., "--input", "-i", help="CSV, TSV or JSONL file (optionally .gz) "
                                    "with the text column(s)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the predictions: .csv, .tsv or "
                                ".jsonl (the extension picks the format)."),
    text_fields: list[str] = typer.Option(None, "--text-field", help="Text column (1 or 2; default: the "
                                          "run's own field names)."),
    id_field: str = typer.Option(None, "--id-field", help="Column copied to the output to identify rows "
                                 "(default: 'id' or 'idx' when the input has one)."),
    batch_size: int = typer.Option(64, help="Rows per batch (batches are formed by length)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Predict each input row's label and class probabilities (regression: its score).

    Output rows follow the input's order and carry `index` (0-based data row) and the id column when
    there is one; then `label` and `p_<label>` per class (JSONL: `probs`), or `score`. The output is
    written to a temporary file and renamed at the end: a failure leaves no partial file.
    """
    from nluforge.cli.targets import load_target_model, open_target
    from nluforge.eval.prediction_files import check_output
    from nluforge.tasks.custom import read_rows

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    fmt = check_output(output, inputs=input_file, overwrite=overwrite)
    t = open_target(run, None, run_only=True)
    rows = read_rows(input_file, t.spec, text_fields=text_fields, id_field=id_field)
    tokenizer, model = load_target_model(t)
    n = predict_rows(model, tokenizer, t, rows, output, fmt, batch_size=batch_size, progress=True)
    typer.echo(f"wrote {n} predictions to {output}", err=True)
    typer.echo(str(output))


def predict_rows(model, tokenizer, t, rows, output: Path, fmt: str, *, batch_size: int,
                 progress: bool) -> int:
    """The work of ``nluforge predict`` once the input is read and the model loaded (the benchmark
    times this): length-sorted batched prediction, then the output file, written atomically."""
    from nluforge.eval.predict import predict_texts
    from nluforge.eval.prediction_files import prediction_rows, write_predictions

    logits = predict_texts(model, tokenizer, rows.texts, max_length=t.cfg.data.max_length,
                           batch_size=batch_size, regression=t.spec.is_regression, progress=progress)
    out = prediction_rows(logits, t.spec.label_names, rows.ids, rows.id_field)
    write_predictions(output, out, fmt)
    return len(out)
