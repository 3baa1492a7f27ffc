"""Learned scene-text recognisers TextZoom scores with: CRNN, ASTER, MORAN (one network per file).

Each module holds the network with the official checkpoint's key names, the input preparation
TextZoom's evaluation applies to a 128x32 SR crop, the decoding, and ``load(weights, device)``
returning an object with ``recognize(images: list[HxWx3 uint8 RGB]) -> list[str]``. The weights
are never downloaded: ``textzoom.recognizer_weights`` names a local file (``harness.recognition``
checks it exists first).
"""
