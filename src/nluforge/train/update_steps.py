"""Update steps for optimizers that do not fit forward → backward → ``optimizer.step()``.

An optimizer's registry entry names its kind in ``meta["update_step"]`` (:mod:`nluforge.optim`);
:func:`for_optimizer` maps the kind to the function the loop calls once per micro-batch
(:func:`nluforge.train.loop.fit`'s ``update_step`` seam):

- ``second_order`` (AdaHessian): the gradients keep their graph (``torch.autograd.grad(...,
  create_graph=True)``, assigned to ``.grad``), so the optimizer can differentiate them again for its
  Hessian-vector product. No clipping (it would change the gradient the Hessian is taken of).
- ``zeroth_order`` (MeZO): no backward at all. The optimizer's ``step(closure)`` evaluates the loss
  (under ``torch.no_grad``, in eval mode, in fp32 without autocast) at the perturbed weights; no
  parameter gets a ``.grad``.

Both call the method's hooks they can honour (``before_forward``, ``after_step``; the second-order
step also ``after_backward``); methods whose hooks need gradients are refused in ``prepare``
(:func:`nluforge.optim.check_combination`). Both take one process (their backward or forward passes
bypass DDP's gradient averaging) and ``grad_accum=1`` for MeZO.
"""

from __future__ import annotations

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.train.loop import Batch, StepContext, UpdateStep, _call_hook, default_update_step


def _one_process(ctx: StepContext, kind: str) -> None:
    if ctx.accelerator.num_processes > 1:
        raise UserError(f"a {kind} optimizer step runs in one process (its passes bypass DDP's gradient "
                        "averaging); run without torchrun")


def second_order_update_step(model: nn.Module, batch: Batch | None, ctx: StepContext) -> torch.Tensor | None:
    """Forward, gradients with their graph (create_graph), and on the step's last micro-batch the step."""
    if batch is None:
        return None
    _one_process(ctx, "second-order")
    if ctx.first:
        _call_hook(ctx.hooks, "before_forward", ctx.step)
    with ctx.accelerator.autocast():
        loss, _ = ctx.loss_fn(model, batch)  # () scalar
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss / ctx.grad_accum, params, create_graph=True, allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        if g is not None:  # a view cannot be detached in place, as Adahessian does once it has used it
            g = g.clone() if g._is_view() else g
            p.grad = g if p.grad is None else p.grad + g
    if ctx.sync:
        _call_hook(ctx.hooks, "after_backward", ctx.step)
        ctx.optimizer.step()
        _call_hook(ctx.hooks, "after_step", ctx.step)
        ctx.optimizer.zero_grad(set_to_none=True)  # drops the graph the gradients held
    return loss.detach()


def zeroth_order_update_step(model: nn.Module, batch: Batch | None, ctx: StepContext) -> torch.Tensor | None:
    """MeZO: the optimizer's ``step(closure)`` runs the perturbed forwards; nothing is differentiated."""
    if batch is None:
        return None
    _one_process(ctx, "zeroth-order")
    if ctx.grad_accum != 1:
        raise UserError(f"a zeroth-order optimizer step takes train.grad_accum=1 (got {ctx.grad_accum})")
    if ctx.first:
        _call_hook(ctx.hooks, "before_forward", ctx.step)
    training = model.training
    model.eval()  # as the MeZO code's zo_forward: no dropout, so both forwards see the same function

    def closure() -> torch.Tensor:
        # fp32 forwards whatever train.precision says: the SPSA estimate is the difference of two losses
        # at eps=1e-3, and bf16 rounds each logit to 8 bits. On an H200 (bf16 autocast, CUDA's default)
        # the tiny-BERT MeZO test diverged (loss 28 after 300 steps) where fp32 on CPU learns; CPU bf16
        # autocast did not reproduce it, so the cause is not isolated, and this fix was not re-run on a GPU.
        with torch.autocast(ctx.accelerator.device.type, enabled=False):
            return ctx.loss_fn(model, batch)[0]

    try:
        with torch.no_grad():
            ctx.optimizer.step(closure)  # accelerate's wrapper returns nothing: the loss is kept on the optimizer
    finally:
        model.train(training)
    _call_hook(ctx.hooks, "after_step", ctx.step)
    return getattr(ctx.optimizer, "optimizer", ctx.optimizer).last_loss


UPDATE_STEPS: dict[str | None, UpdateStep] = {None: default_update_step, "second_order": second_order_update_step,
                                              "zeroth_order": zeroth_order_update_step}


def for_optimizer(name: str) -> UpdateStep:
    """The update step the named optimizer needs (its registry entry's ``update_step`` kind)."""
    from nluforge.optim import OPTIMIZERS

    return UPDATE_STEPS[OPTIMIZERS.entry(name).meta.get("update_step")]
