"""Proof of no change: run a fixed script of CLI calls and digest everything it prints and
writes, so that a reshaping of the code can be shown to change no output.

    python tests/golden/golden.py record --model tiny      # writes tests/golden/tiny.json
    python tests/golden/golden.py check --model tiny       # exit 1 and a diff if anything moved

What is left out of the comparison, because it differs between two runs of the same code:
timing fields, package versions, the command line and absolute paths (replaced by <RUN>).
JSON files are compared after dropping those keys; parquet files by their table contents;
safetensors by their tensors (the header's metadata order varies); everything else by bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Resolved: from a worktree, ../shared is a link, and the manifest records the data paths.
SHARED_BBQ = (HERE.parents[2] / "shared" / "data" / "bbq").resolve()
# Files added on purpose since the recording, with why; `check` lists them and passes.
ADDED_BY_DESIGN = {
    "spans.parquet": "each round's token spans, stored by replay so the report reads them "
    "through Run instead of rebuilding conversations with replay",
}
VOLATILE_KEYS = {
    "timing",
    "versions",
    "command",
    "elapsed_s",
    "created",
    "wall_s",
    # sae train's training.json and sae features' summary.json: clock readings
    "started_utc",
    "seconds",
    "train_tokens_per_s",
    "total_s",
}


def script(model: str) -> list[tuple[str, list[str]]]:
    """(name, argv) of every call; {A}..{D} stand for run directories, {S} for an SAE folder."""
    if model == "tiny":
        base = ["--model", "tiny", "--task", "builtin", "--rounds", "2", "--limit", "8"]
        bbq = [str(SHARED_BBQ / "Age.jsonl"), str(SHARED_BBQ / "Religion.jsonl")]
        return [
            ("replay-sc", ["replay", *base, "--plan", "self-correct", "--out", "{A}", "--json"]),
            ("replay-base", ["replay", *base, "--plan", "baseline", "--out", "{B}", "--json"]),
            (
                "replay-bbq",
                [
                    "replay",
                    "--model",
                    "tiny",
                    "--task",
                    "bbq",
                    "--data",
                    *bbq,
                    "--sample",
                    "10",
                    "--rounds",
                    "1",
                    "--out",
                    "{C}",
                ],
            ),
            (
                "replay-generate",
                [
                    "replay",
                    "--model",
                    "tiny",
                    "--task",
                    "builtin",
                    "--limit",
                    "3",
                    "--rounds",
                    "1",
                    "--mode",
                    "generate",
                    "--max-new-tokens",
                    "6",
                    "--out",
                    "{D}",
                    "--json",
                ],
            ),
            ("metrics", ["metrics", "--run", "{A}", "--json"]),
            ("metrics-table", ["metrics", "--run", "{C}"]),
            ("probe", ["probe", "--run", "{A}", "--concept", "stereotype", "--json"]),
            ("probe-table", ["probe", "--run", "{B}", "--concept", "morality"]),
            ("patch", ["patch", "--run", "{A}", "--layer", "all", "--round", "2", "--json"]),
            (
                "patch-heads",
                ["patch", "--run", "{A}", "--layer", "1", "--round", "1", "--component", "heads"],
            ),
            (
                "patch-attr",
                [
                    "patch",
                    "--run",
                    "{A}",
                    "--layer",
                    "all",
                    "--round",
                    "2",
                    "--component",
                    "resid_pre,attn_out,mlp_out",
                    "--method",
                    "attribution",
                    "--verify-top",
                    "3",
                    "--json",
                ],
            ),
            (
                "circuit",
                [
                    "circuit",
                    "--run",
                    "{A}",
                    "--round",
                    "1",
                    "--limit",
                    "4",
                    "--steps",
                    "2",
                    "--top",
                    "10",
                    "--verify-top",
                    "5",
                    "--n-boot",
                    "50",
                    "--json",
                ],
            ),
            (
                "sae-train",
                [
                    "sae",
                    "train",
                    "--model",
                    "tiny",
                    "--out",
                    "{S}",
                    "--corpus",
                    "builtin",
                    "--hook",
                    "blocks.1.hook_resid_post",
                    "--width",
                    "32",
                    "--k",
                    "4",
                    "--tokens",
                    "2048",
                    "--batch-tokens",
                    "256",
                    "--eval-tokens",
                    "512",
                    "--json",
                ],
            ),
            (
                "sae-features",
                [
                    "sae",
                    "features",
                    "--run",
                    "{A}",
                    "--sae",
                    "{S}",
                    "--top",
                    "4",
                    "--n-shuffles",
                    "10",
                    "--n-boot",
                    "50",
                    "--json",
                ],
            ),
            (
                "experiment-convergence",
                [
                    "experiment",
                    "convergence",
                    "--run",
                    "{A}",
                    "--control-run",
                    "{B}",
                    "--n-boot",
                    "50",
                    "--json",
                ],
            ),
            ("export", ["export", "--run", "{A}", "--run", "{B}"]),
        ]
    if model == "smollm2":  # make demo's calls
        base = ["--model", "smollm2", "--task", "builtin", "--rounds", "3"]
        return [
            ("replay", ["replay", *base, "--plan", "self-correct", "--out", "{A}"]),
            ("probe", ["probe", "--run", "{A}", "--concept", "stereotype"]),
            (
                "patch",
                [
                    "patch",
                    "--run",
                    "{A}",
                    "--layer",
                    "all",
                    "--round",
                    "3",
                    "--limit",
                    "16",
                    "--component",
                    "resid_post,attn_out,mlp_out,heads",
                ],
            ),
            ("export", ["export", "--run", "{A}"]),
            ("metrics", ["metrics", "--run", "{A}", "--json"]),
        ]
    raise SystemExit(f"unknown model {model!r}")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _portable(text: str, root: Path) -> str:
    """The text with this machine's paths named: the run folder and the shared BBQ data."""
    return text.replace(str(root), "<RUN>").replace(str(SHARED_BBQ), "<BBQ>")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _strip_machine(obj):
    """A BBQ replay's manifest without its fingerprint, which hashes the data files' absolute
    paths (replay's contract: a moved file is another replay): on another machine ../shared
    lies elsewhere. The data's contents are still checked through ``data_hash``."""
    if isinstance(obj, dict) and "fingerprint" in obj and str(SHARED_BBQ) in json.dumps(obj):
        return {k: v for k, v in obj.items() if k != "fingerprint"}
    return obj


def digest_file(path: Path, root: Path) -> str:
    name = path.name
    if name.endswith(".json"):
        data = _strip_machine(_strip(json.loads(path.read_text())))
        text = json.dumps(data, sort_keys=True)
        return _sha(_portable(text, root).encode())
    if name.endswith(".parquet"):
        import pandas as pd

        frame = pd.read_parquet(path)
        return _sha(frame.to_json(orient="split", double_precision=15).encode())
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return _sha(b"".join(k.encode() + t.numpy().tobytes() for k, t in sorted(tensors.items())))
    return _sha(_portable(path.read_bytes().decode("latin-1"), root).encode("latin-1"))


def run_script(model: str) -> dict[str, dict[str, str]]:
    interp = [sys.executable, "-m", "interp.cli"]
    # PYTHONHASHSEED: sae-lens writes cfg.json's keys in set order, so an SAE's config hash
    # (in sae features' summary) would differ between two trainings of the same SAE.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"}
    result: dict[str, dict[str, str]] = {"stdout": {}, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {k: str(root / k) for k in "ABCDS"}
        for name, argv in script(model):
            argv = [a.format(**dirs) for a in argv]
            proc = subprocess.run(interp + argv, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            out = _portable(proc.stdout, root)
            if argv[-1] == "--json":
                out = json.dumps(_strip(json.loads(out)), sort_keys=True)
            result["stdout"][name] = out
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(root))
            if path.is_file() and not path.name.startswith(".interp.lock"):
                result["files"][rel] = digest_file(path, root)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["record", "check"])
    parser.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    args = parser.parse_args()
    target = HERE / f"{args.model}.json"
    got = run_script(args.model)
    if args.action == "record":
        target.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(got['files'])} files, {len(got['stdout'])} outputs -> {target}")
        return
    want = json.loads(target.read_text())
    bad, added = [], []
    for kind in ("stdout", "files"):
        for key in sorted(set(want[kind]) | set(got[kind])):
            if kind == "files" and key not in want[kind] and Path(key).name in ADDED_BY_DESIGN:
                added.append(f"added by design: {key} ({ADDED_BY_DESIGN[Path(key).name]})")
                continue
            if want[kind].get(key) != got[kind].get(key):
                bad.append(f"{kind}: {key}")
                if kind == "stdout" and key in want[kind] and key in got[kind]:
                    bad.append(
                        f"  want: {want[kind][key][:300]!r}\n  got:  {got[kind][key][:300]!r}"
                    )
    if bad:
        print("\n".join(["outputs changed:", *bad]))
        raise SystemExit(1)
    print("\n".join(added))
    kept = len(got["files"]) - len(added)
    print(f"no change: {kept} files, {len(got['stdout'])} outputs ({len(added)} added by design)")


if __name__ == "__main__":
    main()
