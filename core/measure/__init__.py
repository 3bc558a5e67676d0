"""Measurement code: functions of tensors, models and data that know nothing of presets, config
keys or run directories. They import only torch, numpy, scipy and each other; bad inputs raise
:class:`heur.core.measure.errors.MeasurementError`, which the edges (preflight, probes, ``heur
compare``) turn into one-line ConfigErrors with their own keys.

- :mod:`.similarity`: CCA, SVCCA, PWCCA, linear CKA (and conv maps)
- :mod:`.curvature`: Hessian / Gauss–Newton / NTK top eigenvalues by Lanczos
- :mod:`.connectivity`: straight paths between weights, BN recomputation, barriers
- :mod:`.curves`: Bezier / polychain curves between weights (any nn.Module, functional_call)
- :mod:`.activations`: capturing layers' outputs on a probe set
- :mod:`.evaluation`: a model's loss and accuracy over a split
- :mod:`.catapult`: catapult detection and the uv model
- :mod:`.blas`: BLAS thread control
"""
