"""Sparse autoencoders (sae-lens) on the models and runs of this toolkit.

- `interp.sae.load`: open any sae-lens SAE folder (``cfg.json`` + ``sae_weights.safetensors``,
  what ``SAE.save_model`` writes and ``SAE.load_from_disk`` reads) and check it against a model.

The package sits below the analyses (replay, patching, probes) in the layers contract, so
feature patching can use it; it reads runs only through `interp.store.Run`.
"""
