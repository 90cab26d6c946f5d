"""L2: differential privacy for training and membership-inference audits.

- ``dp_sgd`` (privacy registry): DP-SGD (Abadi et al. 2016) with Opacus's per-sample gradients
  (hooks, or ghost clipping, Li et al. 2022) and accountants, and flat, per-layer or group-wise
  clipping (Bu et al. 2023). :mod:`.engine` holds the per-sample clipping and noise;
  :mod:`.accounting` the noise calibration and the epsilon spent. The glue that needs the training
  loop's types (the update step, the Poisson sampler) lives in ``nluforge.experiments.dp_train``.
- ``loss`` and ``lira`` (audit registry): the loss-threshold attack (Yeom et al. 2018) and the
  likelihood-ratio attack (Carlini et al. 2022); :mod:`.audit` scores and measures them (AUC, TPR at
  low FPR, the empirical epsilon lower bound with Clopper-Pearson intervals). Shadow models are
  trained by ``nluforge.experiments.audit`` as grid cells.

Entries register lazily (config classes in :mod:`.config` import no torch and no opacus).
"""

from __future__ import annotations

from nluforge.core.steps import AUDITS, PRIVACY

PRIVACY.register(
    "dp_sgd", "nluforge.privacy.config:DpSgdConfig",
    summary="DP-SGD through Opacus: Poisson sampling, per-sample clipping (flat/per_layer/group, ghost), "
            "noise calibrated to a target epsilon",
    paper="Abadi et al. 2016, Deep Learning with Differential Privacy (CCS); Li et al. 2022, Large Language "
          "Models Can Be Strong Differentially Private Learners (ICLR); Bu et al. 2023, Group-wise Clipping "
          "for Differentially Private Optimization (arXiv:2212.01539)",
)
_AUDIT_RUN = "nluforge.experiments.audit:run_audit_step"
AUDITS.register(
    "loss", "nluforge.privacy.config:LossAuditConfig", run=_AUDIT_RUN,
    summary="loss-threshold membership inference on the run's recorded member / non-member split",
    paper="Yeom et al. 2018, Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting (CSF)",
)
AUDITS.register(
    "lira", "nluforge.privacy.config:LiraAuditConfig", run=_AUDIT_RUN,
    summary="likelihood-ratio membership inference with k shadow models trained on random halves of the pool",
    paper="Carlini et al. 2022, Membership Inference Attacks From First Principles (IEEE S&P)",
)
