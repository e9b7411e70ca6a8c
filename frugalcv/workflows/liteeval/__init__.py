"""LiteEval (dissertation Ch. 4): coarse-to-fine video recognition over pre-extracted features.

``train`` (the training step, the temperature schedule), ``evaluate`` (the hard gate, the baselines,
the online setting, mAP and GFLOPs), ``report`` (tables and figures), ``model_file``, ``params``;
``stages`` binds them to the stage kit (``liteeval.train``, ``liteeval.evaluate``). The networks are in
``frugalcv.models.liteeval``.
"""
