"""AdaHessian: Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney 2021, "ADAHESSIAN: An Adaptive Second
Order Optimizer for Machine Learning" (AAAI 2021).

Adam's second moment is replaced by a moving average of the squared Hutchinson estimate of the Hessian
diagonal, D ≈ E_z[z ⊙ (H z)] with Rademacher z (one Hessian-vector product per step, through a
backward of the gradients), raised to the Hessian power k.

Implementation: torch-optimizer's ``Adahessian`` (not written here). It needs the gradients with their
graph: the entry declares ``update_step="second_order"`` (the loop's backward uses ``create_graph``;
:func:`nluforge.train.update_steps.second_order_update_step`) and ``attn_implementation="eager"`` (the
pipeline loads the model so: SDPA on CPU has no double backward).

Departures: ``hessian_power`` defaults to 1 as in the paper and its reference code (torch-optimizer's
default is 0.5); no spatial averaging for 2-D weights (the paper averages only convolution kernels);
gradient clipping is not applied (the Hessian-vector product differentiates the unclipped gradient;
the run records this as a note). Weight decay is torch-optimizer's decoupled form, per parameter group.
"""

from __future__ import annotations

from torch import nn


def adahessian(model: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-4,
               hessian_power: float = 1.0):
    import torch_optimizer

    from nluforge.optim import _param_groups

    opt = torch_optimizer.Adahessian(_param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps,
                                     hessian_power=hessian_power)
    opt.nluforge_info = {"backend": "torch-optimizer", "hessian_power": hessian_power}
    return opt
