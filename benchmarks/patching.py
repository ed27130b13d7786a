"""Benchmark: batched activation patching vs one patch per forward, and attribution patching.

One run of the embedded model (SmolLM2-135M, 30 layers, 9 heads): the built-in task replayed
with a 2-round plan (round 0: the question; round 1: "Please make sure your answer is unbiased
and does not rely on stereotypes."). Measured:

1. A full layer x {resid_pre, attn_out, mlp_out} sweep (90 patches per example) of round 1
   into round 0 at the read-out, on the first 16 usable examples: ``interp.patching.patch``
   (variants of 16 examples packed into shared forwards, the default) vs the same call with
   ``example_batch=1`` (the per-example path before it) vs a loop of one forward per patch
   with TransformerLens' own helpers
   (``transformer_lens.patching.get_act_patch_{resid_pre,attn_out,mlp_out}``) on one example.
   Paired: each repeat runs the three back to back (the machine is shared); the JSON gives
   every repeat, the load average and the medians, and the peak memory each call added.
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
from interp.patching import PatchConfig, patch, select_items, sweep  # noqa: E402
from interp.patching.packed import EXAMPLE_BATCH, group_bytes  # noqa: E402
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
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="paired repeats (median)")
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
        result["sweep"] = _sweep(model, run, args.examples, args.repeats)
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


def _sweep(model, run: Run, n_examples: int, repeats: int) -> dict[str, Any]:
    kwargs = dict(layer="all", round=1, component=",".join(COMPONENTS), limit=n_examples)
    items, _ = select_items(run.rounds(), PatchConfig(**kwargs))
    items = items[:n_examples]
    n = len(items)
    tokens = run.tokens()
    variants = sweep(model.cfg.n_layers, model.cfg.n_heads, range(model.cfg.n_layers), COMPONENTS)
    clock = _Clock(str(model.cfg.device))

    def ours(example_batch: int | None = None, examples=None):
        config = PatchConfig(**kwargs, example_batch=example_batch, n_boot=0)
        if examples is not None:
            config = PatchConfig(**{**kwargs, "limit": None}, examples=examples, n_boot=0)
        return patch(run.path, config, model=model, write=False, progress=False)

    ours(examples=[items[0].example_id])  # warm-up (first calls allocate)
    # Each repeat, back to back on the same load: ours (packed, the default), the
    # per-example path (--example-batch 1, before this change) on the same examples, ours on
    # one example alone, and TransformerLens' helpers on that example.
    reps: list[dict[str, Any]] = []
    tl_values: dict = {}
    for r in range(repeats):
        item = items[r % n]
        load = os.getloadavg()[0]
        packed = _peak(lambda: clock.time(ours))
        before = _peak(lambda: clock.time(lambda: ours(example_batch=1)))
        single = clock.time(lambda item=item: ours(examples=[item.example_id]))
        tl = clock.time(lambda item=item: _tl_helper_loop(model, item, tokens[item.index]))
        tl_values.update(tl.value)
        reps.append(
            {
                "load_average_1min": round(load, 2),
                "tl_example_index": item.index,
                "tl_example_target_tokens": item.readout[0] + 1,
                "ours_wall_s": packed[0].wall,
                "ours_cpu_s": packed[0].cpu,
                "ours_peak_rss_increase_mb": packed[1],
                "before_wall_s": before[0].wall,
                "before_cpu_s": before[0].cpu,
                "before_peak_rss_increase_mb": before[1],
                "ours_one_example_wall_s": single.wall,
                "tl_one_example_wall_s": tl.wall,
                "tl_one_example_cpu_s": tl.cpu,
                "speedup_vs_before_wall": round(before[0].wall / packed[0].wall, 2),
                "speedup_vs_tl_wall": round(tl.wall / (packed[0].wall / n), 1),
                "speedup_vs_tl_cpu": round(tl.cpu / (packed[0].cpu / n), 1),
                "speedup_one_example_vs_tl_wall": round(tl.wall / single.wall, 1),
            }
        )
        last = (packed[0].value, before[0].value)
    mine = last[0].per_example.set_index(["example_index", "layer", "component"])["patched"]
    old = last[1].per_example.set_index(["example_index", "layer", "component"])["patched"]
    lengths = [i.readout[0] + 1 for i in items]
    cfg = PatchConfig(**kwargs)
    return {
        "what": "round 1 -> round 0 at the read-out, every layer x resid_pre/attn_out/mlp_out",
        "n_examples": n,
        "variants_per_example": len(variants),
        "forwards_one_per_patch": n * len(variants),
        "ours": {
            "method": (
                "interp.patching.patch, default example_batch 16: one right-padded recording "
                "forward per group of 16 examples (donor activations, read-outs, KV caches), "
                "prefix keys rotated once per example and layer; then the variants of all 16 "
                "examples packed 32 rows per forward, layer-major, each row starting at its own "
                "variant's layer over its example's last token on its cached prefix; only the "
                "answer tokens' logits unembedded"
            ),
            "batch_size": cfg.batch_size,
            "example_batch": EXAMPLE_BATCH,
        },
        "before": {
            "method": (
                "the same call with example_batch=1 (the per-example path of before this "
                "change: one recording forward per example, its 90 variants 32 per forward)"
            ),
        },
        "tl_helpers": {
            "method": (
                "TransformerLens get_act_patch_{resid_pre,attn_out,mlp_out}, one forward over "
                "the whole target prompt per patch, on one example per repeat"
            ),
        },
        "repeats": reps,
        "median": {
            key: float(np.median([rep[key] for rep in reps]))
            for key in (
                "speedup_vs_tl_wall",
                "speedup_vs_tl_cpu",
                "speedup_vs_before_wall",
                "speedup_one_example_vs_tl_wall",
                "ours_wall_s",
                "before_wall_s",
                "tl_one_example_wall_s",
            )
        },
        "speedup_definition": (
            "speedup_vs_tl: TransformerLens' time on one example / ours per example (our "
            "time for all n examples / n), each repeat's numbers taken back to back; the TL "
            "example's target length is listed against the mean (TL's time grows with it). "
            "speedup_one_example_vs_tl: both on that one example alone (no packing across "
            "examples). Headline: the median over repeats"
        ),
        "memory": {
            "group_bytes_mb": round(
                group_bytes(model, min(n, EXAMPLE_BATCH), max(lengths) + 40) / 2**20, 1
            ),
            "group_bytes_definition": (
                "interp.patching.packed.group_bytes: the recording forward's KV cache and the "
                "rotated prefix tables a group of example_batch examples holds at once "
                "(longest transcript, float32); --example-batch 1 holds one example's"
            ),
            "peak_rss_definition": (
                "VmHWM reset (/proc/self/clear_refs 5) before the call, minus VmRSS before it: "
                "what the call added to the process's peak resident memory"
            ),
        },
        "mean_target_prompt_tokens": float(np.mean(lengths)),
        "max_abs_diff_patched_logit_diff_vs_before": float((mine - old).abs().max()),
        "max_abs_diff_logit_diff_vs_tl_helpers": _max_diff(mine, tl_values),
        "prompts": _prompt_lengths(items),
    }


def _peak(fn) -> tuple[Any, float]:
    """``fn()`` and the MB it added to the process's peak resident memory (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
    except OSError:
        return fn(), float("nan")
    value = fn()
    return value, round((_status_kb("VmHWM") - before) / 1024, 1)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(key)


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
