"""A run's model at one of its training checkpoints (plain or compressed), for ``nluforge eval --checkpoint``.

The model is rebuilt as the run built it before training (same config, same seed: the pretrained
encoder plus the seeded head and adapter), and the checkpoint's weights, decoded along its delta chain,
are copied in (:func:`nluforge.train.checkpoint.restore_weights`, which checks that a chain starting
from the initial weights starts from these ones).
"""

from __future__ import annotations

from pathlib import Path

from nluforge.core.errors import UserError


def checkpoint_name(ckpt_dir: Path, checkpoint: str) -> str:
    """``latest``, ``step-000200`` or ``200`` -> the step directory's name, or a one-line error."""
    if checkpoint == "latest":
        pointer = ckpt_dir / "latest"
        if not pointer.is_file():
            raise UserError(f"{ckpt_dir} has no complete checkpoint (no 'latest')")
        return pointer.read_text().strip()
    name = f"step-{int(checkpoint):06d}" if checkpoint.isdigit() else checkpoint
    if not (ckpt_dir / name).is_dir():
        have = ", ".join(sorted(p.name for p in ckpt_dir.glob("step-*"))) or "none"
        raise UserError(f"no checkpoint '{checkpoint}' in {ckpt_dir}; available: {have}")
    return name


def model_at_checkpoint(run_dir: Path, cfg, spec, checkpoint: str):
    """``(tokenizer, model, step_name)`` with the weights of ``run_dir/checkpoints/<checkpoint>``, in eval mode."""
    from nluforge.core.runtime import seed_everything
    from nluforge.experiments.pipeline import build_model
    from nluforge.models.loading import load_tokenizer
    from nluforge.train.checkpoint import restore_weights

    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        raise UserError(f"{run_dir} has no checkpoints/ (removed when a run completes unless "
                        "train.keep_checkpoints is true)")
    name = checkpoint_name(ckpt_dir, checkpoint)
    tokenizer = load_tokenizer(cfg.model)
    seed_everything(cfg.seed)  # the head's initialisation, as in prepare
    model, _, _ = build_model(cfg, spec, tokenizer)
    restore_weights(ckpt_dir, model, name)
    return tokenizer, model.eval(), name
