"""Benchmark: batched activation patching vs one patch per forward, and attribution patching.

One run of the embedded model (SmolLM2-135M, 30 layers, 9 heads): the built-in task replayed
with a 2-round plan (round 0: the question; round 1: "Please make sure your answer is unbiased
and does not rely on stereotypes."), 32 usable examples. Measured:

1. A full layer x {resid_pre, attn_out, mlp_out} sweep (90 patches per example) of round 1
   into round 0 at the read-out: ``interp.patching.patch`` (batched variants, KV-prefix
   reuse) vs a loop of one forward per patch with TransformerLens' own helpers
   (``transformer_lens.patching.get_act_patch_{resid_pre,attn_out,mlp_out}``) and vs a plain
   ``run_with_hooks`` loop that skips the unembedding at other positions. The loops run on a
   few examples and are extrapolated linearly to all of them; the JSON says so.
2. Attribution patching over every head (270 variants), its time, and Spearman's rank
   correlation with exact patching on the top 20.

Writes benchmarks/results/patching.json. Run: ``.venv/bin/python benchmarks/patching.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens' helpers draw a bar per call

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformer_lens import patching as tl_patching  # noqa: E402

from interp.model.hooknames import act_name  # noqa: E402
from interp.model.loading import load_model  # noqa: E402
from interp.patching import PatchConfig, patch, patch_pair, select_items, sweep  # noqa: E402
from interp.replay.loop import ReplayConfig, replay  # noqa: E402
from interp.runs.store import Run  # noqa: E402

FOLLOW_UP = "Please make sure your answer is unbiased and does not rely on stereotypes."
COMPONENTS = ("resid_pre", "attn_out", "mlp_out")
TL_HELPERS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
}
OUT = Path(__file__).resolve().parent / "results" / "patching.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--loop-examples", type=int, default=2, help="examples the loops time")
    parser.add_argument("--verify-top", type=int, default=20)
    parser.add_argument("--run", type=Path, help="reuse a replayed run (2 rounds, smollm2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    model = load_model("smollm2", device=args.device)
    with tempfile.TemporaryDirectory(prefix="bench-patching-") as tmp:
        run, replay_s = _run(model, args.run, Path(tmp), args.device)
        result = {
            "machine": _machine(args.device),
            "model": {
                "name": "smollm2",
                "n_layers": model.cfg.n_layers,
                "n_heads": model.cfg.n_heads,
            },
            "run": {
                "source": str(args.run) if args.run else "replayed here",
                "replay": "builtin task, 48 examples, plan with one follow-up (rounds 0..1)",
                "replay_s": replay_s,
                "follow_up": FOLLOW_UP,
            },
        }
        result["sweep"] = _sweep(model, run, args.examples, args.loop_examples)
        result["run"].update(result["sweep"].pop("prompts"))
        result["attribution"] = _attribution(model, run, args.examples, args.verify_top)
        result["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _run(model, given: Path | None, tmp: Path, device: str) -> tuple[Run, float | None]:
    if given is not None:
        return Run.open(given), None
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"name": "unbiased-once", "followups": [FOLLOW_UP]}))
    config = ReplayConfig(
        out=str(tmp / "run"),
        model="smollm2",
        task="builtin",
        plan=str(plan),
        rounds=1,
        device=device,
    )
    started = time.perf_counter()
    run = replay(config, model=model)
    return run, round(time.perf_counter() - started, 2)


def _machine(device: str) -> dict[str, Any]:
    info = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


# --- 1. the layer x component sweep ---------------------------------------------------------------


def _sweep(model, run: Run, n_examples: int, loop_examples: int) -> dict[str, Any]:
    kwargs = dict(layer="all", round=1, component=",".join(COMPONENTS), limit=n_examples)
    clock = _Clock(str(model.cfg.device))
    ours = clock.time(lambda: patch(run.path, PatchConfig(**kwargs), model=model, write=False))
    n = ours.value.summary["n_examples"]
    items, _ = select_items(run.rounds(), PatchConfig(**kwargs))
    tokens = run.tokens()
    variants = sweep(model.cfg.n_layers, model.cfg.n_heads, range(model.cfg.n_layers), COMPONENTS)
    # The loops are timed on a few examples, each right after our own code on the same
    # example, so that both see the same load on a shared machine.
    paired: dict[str, list[_Timed]] = {"ours": [], "tl": [], "hooks": []}
    values: dict[str, dict] = {"tl": {}, "hooks": {}}
    for item in items[:loop_examples]:
        target, source = _prompts(model, item, tokens[item.index])
        paired["ours"].append(
            clock.time(lambda t=target, s=source: patch_pair(model, t, s, variants))
        )
        for key, loop in (("tl", _tl_helper_loop), ("hooks", _plain_hook_loop)):
            timed = clock.time(lambda loop=loop, item=item: loop(model, item, tokens[item.index]))
            values[key].update(timed.value)
            paired[key].append(timed)
    mine = ours.value.per_example.set_index(["example_index", "layer", "component"])["patched"]
    k = len(paired["ours"])
    return {
        "what": "round 1 -> round 0 at the read-out, every layer x resid_pre/attn_out/mlp_out",
        "n_examples": n,
        "variants_per_example": len(variants),
        "forwards_one_per_patch": n * len(variants),
        "ours": {
            "method": (
                "interp.patching.patch: one recording forward per example (donor "
                "activations, both read-outs, the target prefix's KV cache), then the variants "
                "batched along the batch dimension (32 per forward) over the target's last "
                "token only, on the frozen prefix cache, each batch from its lowest layer up"
            ),
            "wall_s": ours.wall,
            "cpu_s": ours.cpu,
            "wall_per_example_s": round(ours.wall / n, 3),
        },
        "tl_helpers_loop": _loop_entry(paired["tl"], n, "TransformerLens get_act_patch_*"),
        "plain_hooks_loop": _loop_entry(paired["hooks"], n, "run_with_hooks, final position"),
        "paired": {
            "examples": k,
            "ours_wall_s": _total(paired["ours"], "wall"),
            "ours_cpu_s": _total(paired["ours"], "cpu"),
            "speedup_vs_tl_helpers_wall": _ratio(paired["tl"], paired["ours"], "wall"),
            "speedup_vs_tl_helpers_cpu": _ratio(paired["tl"], paired["ours"], "cpu"),
            "speedup_vs_plain_hooks_wall": _ratio(paired["hooks"], paired["ours"], "wall"),
            "speedup_vs_plain_hooks_cpu": _ratio(paired["hooks"], paired["ours"], "cpu"),
            "note": (
                "headline speedups: on the same examples, ours timed right before each loop; "
                "cpu = process CPU time, less sensitive to other processes on the machine"
            ),
        },
        "speedup_all_examples_vs_tl_helpers_extrapolated": round(
            _total(paired["tl"], "wall") / k * n / ours.wall, 1
        ),
        "max_abs_diff_logit_diff_vs_tl_helpers": _max_diff(mine, values["tl"]),
        "max_abs_diff_logit_diff_vs_plain_hooks": _max_diff(mine, values["hooks"]),
        "prompts": _prompt_lengths(items),
    }


@dataclass
class _Timed:
    value: Any
    wall: float
    cpu: float


@dataclass
class _Clock:
    device: str

    def time(self, fn) -> _Timed:
        self.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        self.sync()
        return _Timed(
            value, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)
        )

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def _total(timed: list[_Timed], what: str) -> float:
    return round(sum(getattr(t, what) for t in timed), 3)


def _ratio(slow: list[_Timed], fast: list[_Timed], what: str) -> float:
    return round(_total(slow, what) / _total(fast, what), 1)


def _loop_entry(timed: list[_Timed], n: int, method: str) -> dict[str, Any]:
    k = len(timed)
    wall = _total(timed, "wall")
    return {
        "method": method + ", one forward over the whole target prompt per patch",
        "examples_timed": k,
        "wall_s": wall,
        "cpu_s": _total(timed, "cpu"),
        "wall_per_example_s": round(wall / k, 2),
        "estimated_wall_s_for_all_examples": round(wall / k * n, 1),
        "extrapolated": True,
        "extrapolation": f"EXTRAPOLATED: per-example time on the first {k} examples x {n}",
    }


def _prompts(model, item, transcript):
    seq = torch.tensor(transcript, device=model.cfg.device)
    return seq[: item.readout[0] + 1], seq[: item.readout[1] + 1]


def _tl_helper_loop(model, item, transcript) -> dict:
    """TransformerLens' helpers assume clean and corrupted prompts of one length; source and
    target differ, so the 'clean cache' is the target's own with its read-out row replaced by
    the source's read-out activation (identical to patching source -> target there)."""
    target, source = _prompts(model, item, transcript)
    names = [act_name(c, layer) for layer in range(model.cfg.n_layers) for c in COMPONENTS]
    wanted = set(names)
    with torch.no_grad():
        _, t_cache = model.run_with_cache(target[None], names_filter=lambda n: n in wanted)
        _, s_cache = model.run_with_cache(source[None], names_filter=lambda n: n in wanted)
    aligned = {}
    for name in names:
        act = t_cache[name].clone()
        act[:, -1] = s_cache[name][:, -1]
        aligned[name] = act
    good, bad = item.good[0], item.bad[0]
    index = pd.DataFrame({"layer": range(model.cfg.n_layers), "pos": len(target) - 1})
    out = {}
    for component, helper in TL_HELPERS.items():
        with torch.no_grad():
            metric = helper(
                model,
                target[None],
                aligned,
                lambda logits: logits[0, -1, good] - logits[0, -1, bad],
                index_axis_names=None,
                index_df=index,
            )
        for layer, value in enumerate(metric.tolist()):
            out[(item.index, layer, component)] = value
    return out


def _plain_hook_loop(model, item, transcript) -> dict:
    """One forward per patch with a plain hook; logits at the final position only."""
    target, source = _prompts(model, item, transcript)
    names = [act_name(c, layer) for layer in range(model.cfg.n_layers) for c in COMPONENTS]
    wanted = set(names)
    with torch.no_grad():
        _, s_cache = model.run_with_cache(source[None], names_filter=lambda n: n in wanted)
    out = {}
    for name in names:
        donor = s_cache[name][0, -1]

        def hook(act, hook, donor=donor):
            act[:, -1] = donor
            return act

        with torch.no_grad(), model.hooks(fwd_hooks=[(name, hook)]):
            resid = model(target[None], stop_at_layer=model.cfg.n_layers)
            logits = model(resid[:, -1:], start_at_layer=model.cfg.n_layers)[0, -1]
        layer, component = int(name.split(".")[1]), name.split("hook_")[1]
        out[(item.index, layer, component)] = float(logits[item.good[0]] - logits[item.bad[0]])
    return out


def _max_diff(mine: pd.Series, theirs: dict) -> float:
    return float(max(abs(mine.loc[key] - value) for key, value in theirs.items()))


def _prompt_lengths(items) -> dict[str, float]:
    return {
        "mean_target_prompt_tokens": float(np.mean([i.readout[0] + 1 for i in items])),
        "mean_source_prompt_tokens": float(np.mean([i.readout[1] + 1 for i in items])),
    }


# --- 2. attribution patching over every head ----------------------------------------------------


def _attribution(model, run: Run, n_examples: int, verify_top: int) -> dict[str, Any]:
    result = patch(
        run.path,
        PatchConfig(
            layer="all",
            round=1,
            component="heads",
            method="attribution",
            verify_top=verify_top,
            limit=n_examples,
        ),
        model=model,
        write=False,
    )
    timing, verify = result.summary["timing"], result.summary["verify"]
    n = result.summary["n_examples"]
    return {
        "variants_per_example": model.cfg.n_layers * model.cfg.n_heads,
        "n_examples": n,
        "attribution_s": round(timing["patching_s"], 2),
        "attribution_per_example_s": round(timing["patching_s"] / n, 3),
        "passes": "one forward with gradients + one backward per example",
        "verify_top": verify["k"],
        "exact_verification_s": round(timing["verify_s"], 2),
        "spearman_top": verify["spearman"],
        "top": verify["variants"],
    }


if __name__ == "__main__":
    main()
