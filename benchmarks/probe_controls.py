"""Measurement: the probe controls that can fail, on the embedded model, over several splits.

For each built-in concept (stereotype, morality) and each split seed, ``probe_layers`` on the
embedded model's (SmolLM2-135M) last-token encodings of the bare statements, and
``transfer_table`` on the same statements wrapped in the chat template (the default plan's
answer prefix, the template's default system prompt), give:

- the headline layer (best validation accuracy) and its test accuracy;
- the optimistic layer (best test accuracy) and its accuracy;
- the surface baselines (bag of words, length/punctuation) and whether the headline probe
  beats the better one (exact one-sided McNemar p < 0.05);
- at the headline layer: the bare direction at the chat read-out (threshold as learned, and
  re-set on wrapped training statements) and a direction fitted there.

One split holds out 54 of 180 pairs; seeds show how much the numbers move with the split.
Encodings are cached under ``$INTERP_CACHE/probe-encodings`` and reused.

    .venv/bin/python benchmarks/probe_controls.py [--seeds 10] \
        [--out benchmarks/results/probe_controls.json]
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

from interp.inputs.plans import load_plan  # noqa: E402
from interp.model.loading import cache_root, load_model  # noqa: E402
from interp.runs.store import write_json  # noqa: E402
from probes.concepts import CONCEPTS, load_concept  # noqa: E402
from probes.directions import probe_layers  # noqa: E402
from probes.encode import cached_encodings, weights_hash  # noqa: E402
from probes.transfer import cached_wrapped_encodings, transfer_table  # noqa: E402


def one_split(bare, wrapped, data, seed: int) -> dict[str, object]:
    probe = probe_layers(bare, data, seed=seed)
    transfer, _ = transfer_table(probe, wrapped, data, seed=seed)
    table = probe.table.merge(transfer, on="layer").set_index("layer")
    head, best = table.loc[probe.val_layer], table.loc[probe.test_layer]
    return {
        "seed": seed,
        "headline_layer": probe.val_layer,
        "headline_test_acc": float(head["acc"]),
        "headline_val_acc": float(head["val_acc"]),
        "test_chosen_layer": probe.test_layer,
        "test_chosen_acc": float(best["acc"]),
        "bow_acc": float(head["bow_acc"]),
        "length_acc": float(head["length_acc"]),
        "mcnemar_p": probe.surface.p_value,
        "beats_surface": probe.surface.beats,
        "transfer_acc": float(head["transfer_acc"]),
        "transfer_centred_acc": float(head["transfer_centred_acc"]),
        "wrapped_acc": float(head["wrapped_acc"]),
        "best_transfer_centred": {
            "layer": int(table["transfer_centred_acc"].idxmax()),
            "acc": float(table["transfer_centred_acc"].max()),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probe_controls.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    model = load_model("smollm2")
    digest = weights_hash(model)
    prefix = load_plan("self-correct").answer_prefix
    cache_dir = cache_root() / "probe-encodings"
    result: dict[str, object] = {
        "what": "probe controls that can fail, per concept and split seed",
        "model": "smollm2",
        "position": "last",
        "method": "probe",
        "answer_prefix": prefix,
        "system": None,
        "concepts": {},
    }
    for name in CONCEPTS:
        data = load_concept(name)
        common = {"name": name, "weights_hash": digest, "cache_dir": cache_dir}
        bare = cached_encodings(
            data.texts(), position="last", get_model=lambda: model, progress=True, **common
        )
        wrapped = cached_wrapped_encodings(
            data.texts(),
            answer_prefix=prefix,
            system=None,
            get_model=lambda: model,
            progress=True,
            **common,
        )
        splits = [one_split(bare, wrapped, data, seed) for seed in range(args.seeds)]
        keys = [k for k, v in splits[0].items() if isinstance(v, float)]
        result["concepts"][name] = {
            "splits": splits,
            "median": {k: statistics.median(s[k] for s in splits) for k in keys},
            "beats_surface_share": sum(s["beats_surface"] for s in splits) / len(splits),
        }
        m = result["concepts"][name]["median"]
        print(
            f"{name}: medians over {args.seeds} splits: headline test acc "
            f"{m['headline_test_acc']:.3f}, test-chosen {m['test_chosen_acc']:.3f}, bow "
            f"{m['bow_acc']:.3f}, length {m['length_acc']:.3f}, at the chat read-out "
            f"{m['transfer_centred_acc']:.3f} (fitted there {m['wrapped_acc']:.3f}); beats the "
            f"surface baseline in {result['concepts'][name]['beats_surface_share']:.0%} of splits"
        )
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
