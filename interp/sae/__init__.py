"""Sparse autoencoders (sae-lens) on the models and runs of this toolkit.

- `interp.sae.load`: open any sae-lens SAE folder (``cfg.json`` + ``sae_weights.safetensors``,
  what ``SAE.save_model`` writes and ``SAE.load_from_disk`` reads) and check it against a model.
- `interp.sae.latent_changes`: read a run with an SAE (``interp sae features``): the stored read-out
  activations encoded, latents across rounds with a shuffled-round control, answer contrasts,
  concept cosines, max-activating contexts; written to ``<run>/sae/<name>/``.
- `interp.sae.corpus`: offline corpora (BBQ round-0 prompts, concept statements, run
  transcripts, text), split by group into train and held-out, packed with the sink token first.
- `interp.sae.train`: training with sae-lens' ``LanguageModelSAETrainingRunner`` on our model.
- `interp.sae.transcoders`: per-layer transcoders (MLP input -> MLP output) trained from
  sae-lens' multi-hook activation store, saved in circuit-tracer's layout, loaded as sae-lens
  Transcoders; the replacement model's next-token loss.
- `interp.sae.evals`: explained variance, L0, dead/dense latents, CE loss recovered and KL on
  held-out tokens.

The package sits below the analyses (replay, patching, probes) in the layers contract, so
feature patching can use it; it reads runs only through `interp.runs.store.Run`.
"""
