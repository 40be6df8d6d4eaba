"""The train benchmark's table and the notes under it (usage:
`tasks/benchmark.py train`)."""

TABLE_HEADER = (
    "| batch | strategy | head | checkpointing | ours ms/step | × baseline "
    "| ours tokens/s "
    "| MFU | ours peak mem | peer ms/step | peer tokens/s | peer peak mem "
    "| ours/peer (tokens/s) |",
    "|---:|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
)


def gib(value):
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def train_table(rows):
    """Markdown table lines; peer columns only on rows that have a peer;
    × baseline: the step against the `baseline` row of the same batch size
    and head."""
    lines = list(TABLE_HEADER)
    baselines = {
        (row["batch"], row["head"]): row["step"]
        for row in rows
        if row["strategy"] == "baseline" and not row["checkpointing"]
    }
    for row in rows:
        relative = "—"
        key = (row["batch"], row["head"])
        if key in baselines:
            relative = f"{row['step'] / baselines[key]:.2f}"
        peer = row.get("peer")
        if peer:
            peer_cells = (
                f"{peer['step'] * 1e3:.1f} | {peer['tps']:.0f} "
                f"| {gib(peer['peak'])} "
                f"| {row['tps'] / peer['tps']:.3g}"
            )
        else:
            peer_cells = "— | — | — | —"
        lines.append(
            f"| {row['batch']} | {row['strategy']} | {row['head']} "
            f"| {'on' if row['checkpointing'] else 'off'} "
            f"| {row['step'] * 1e3:.1f} "
            f"| {relative} | {row['tps']:.0f} | {100 * row['mfu']:.1f}% "
            f"| {gib(row['peak'])} | {peer_cells} |"
        )
    return lines


def notes(args, environment, rows, peer):
    """The lines under the table: what MFU and `peer` (its class and
    device) are."""
    flops = {
        row["batch"]: (row["flops"], row["full_head_flops"])
        for row in rows
        if row["head"] == "gathered"
    }
    counts = "; ".join(
        f"batch {batch}: {gathered / 1e9:.1f} GFLOP a step with the "
        f"gathered head ({full / 1e9:.1f} with the full head)"
        for batch, (gathered, full) in flops.items()
    )
    lines = [
        "",
        "MFU: model FLOPs of the step as computed (6 x layer matmul weights "
        "x tokens + 6 x head weights x scored positions + 12 x layers x "
        "hidden x maxlen^2 x batch, and the gathered head's one-hot "
        "product; see train_flops) per second, over the best "
        f"{args.precision} matmul FLOP/s of the model's own shapes "
        f"measured in this process ({rows[0]['matmul_peak'] / 1e12:.3f} "
        "TFLOP/s, the higher of before and after the rows)"
        + (f"; {counts}" if counts else "")
        + ".",
        f"Peer: Hugging Face {peer}, "
        f"UniLM 4-D additive mask, {args.precision} (autocast unless fp32), "
        "AdamW; teacher forcing, so "
        "baseline rows only.",
    ]
    if environment["accelerator"] != "gpu":
        lines.append(
            "Peak memory on a CPU: the process's peak resident memory "
            "during the row (weights, optimizer state and runtime included)."
        )
    elif environment["backend"] == "jax":
        lines.append(
            "JAX peak memory is the process peak up to that row "
            "(it cannot be reset)."
        )
    return lines
