"""Models: loading a TransformerLens ``HookedTransformer`` (the embedded SmolLM2, the tiny test
model, a GGUF file or a folder), its fast CPU path, the KV-cache helpers, the memory layout and
hook names. Builds on TransformerLens only: nothing here imports inputs, runs or analyses."""
