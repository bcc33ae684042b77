"""Trust: who the errors fall on (fairness, with fairlearn) and how fragile the model is (robustness, with
torchattacks and common corruptions).

- :mod:`methodo.trust.fairness`: per-group metrics (fairlearn ``MetricFrame``) for every split, with group
  sizes and bootstrap intervals; disparity measures; proxy features and label bias on the training rows.
- :mod:`methodo.trust.mitigate`: reweighing, fairlearn's ``ThresholdOptimizer`` and ``ExponentiatedGradient``,
  an in-loop disparity penalty, compared side by side.
- :mod:`methodo.trust.robustness`: adversarial accuracy per attack and budget (FGSM, PGD, one-pixel),
  common corruptions at 5 severities, the gallery of fooled images; ``methodo robustness RUN_DIR``.
- :mod:`methodo.trust.adversarial`: ``train.adversarial``, adversarial copies mixed into training batches.
- :mod:`methodo.trust.findings`: ``group_disparity``, ``group_underrepresented``, ``proxy_feature``,
  ``label_bias``, ``not_robust``, ``corruption_sensitive``, ``overconfident_under_attack``.

Every heavy library (fairlearn, torchattacks, scikit-learn) is imported inside the functions.
"""
