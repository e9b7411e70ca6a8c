"""AdaFrame (dissertation Ch. 3): adaptive frame selection over precomputed per-frame features.

``video.extract`` -> ``adaframe.train`` (the memory-augmented LSTM, Eq. 3.7) and
``adaframe.baselines`` (AVGPOOLING, LSTM over K frames) -> ``adaframe.evaluate`` (adaptive
lookahead: mAP, frames and GFLOPs per video; report). Steps: ``train`` (the Trainer tasks),
``evaluate`` (one streamed pass, every operating point), ``costs``, ``metrics``, ``report``;
``stages`` binds them to the stage kit.
"""
