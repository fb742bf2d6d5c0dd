"""Outcome data sets for the routing-quality benchmark, read in place.

Any data set reduces to the same shape: prompts, an outcome matrix (prompt x model; 0/1 or a
graded score rescaled to 0..1) and a model table (name, parameters, price per million
tokens). Loaders for the three sets in ``../shared/datasets`` plus a generic CSV form:

    prompt,<model A>,<model B>,...        # True/False, 0/1, or numeric scores
    + a model table CSV: name,params_b,price_per_mtok

so that other data sets drop in.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

csv.field_size_limit(10**8)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    params_b: float
    price_per_mtok: float


@dataclass
class OutcomeSet:
    name: str
    prompts: list[str]
    models: list[ModelInfo]
    outcomes: np.ndarray  # (n_prompts, n_models) in 0..1
    graded: bool  # True when outcomes are graded scores, not 0/1
    groups: list[str] | None = None  # e.g. MMLU subject, used for stratified splits

    def subset(self, idx: np.ndarray) -> OutcomeSet:
        return OutcomeSet(
            self.name,
            [self.prompts[i] for i in idx],
            self.models,
            self.outcomes[idx],
            self.graded,
            [self.groups[i] for i in idx] if self.groups else None,
        )


def _bool(v: str) -> float:
    s = v.strip().lower()
    if s in ("true", "1", "yes"):
        return 1.0
    if s in ("false", "0", "no", ""):
        return 0.0
    return float(s)


def load_routellm_mmlu(root: Path = DATASETS / "routellm" / "mmlu", *, drop_contaminated: bool = True) -> OutcomeSet:
    contaminated: set[str] = set()
    cfile = root / "contaminated_prompts.jsonl"
    if drop_contaminated and cfile.exists():
        for line in cfile.read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                if isinstance(obj, str):
                    contaminated.add(obj)
                else:
                    contaminated.update(v for k, v in obj.items() if "prompt" in k and isinstance(v, str))
    prompts, rows, groups = [], [], []
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    for path in sorted(glob.glob(str(root / "mmlu_*.csv"))):
        subject = Path(path).stem.removeprefix("mmlu_")
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r["prompt"] in contaminated:
                    continue
                prompts.append(r["prompt"])
                rows.append([_bool(r[weak]), _bool(r[strong])])
                groups.append(subject)
    # Prices: RouteLLM's paper uses GPT-4 at $24.7/Mtok and Mixtral at $0.24/Mtok (blended).
    models = [ModelInfo("mixtral-8x7b-instruct", 46.7, 0.24), ModelInfo("gpt-4-1106-preview", 1760.0, 24.7)]
    return OutcomeSet("routellm-mmlu", prompts, models, np.array(rows, dtype=np.float64), False, groups)


def _size(s: str) -> float:
    m = re.match(r"([\d.]+)\s*([BM])", s.strip(), re.I)
    if not m:
        return float("nan")
    return float(m.group(1)) / (1000.0 if m.group(2).upper() == "M" else 1.0)


def load_llmrouter(root: Path = DATASETS / "llmrouter") -> OutcomeSet:
    table = json.loads((root / "models.json").read_text())
    first = json.loads((root / "test.json").read_text())[0]["scores"]
    names = [n for n in table if n in first]  # models.json lists more models than were scored
    models = [
        ModelInfo(
            n,
            _size(str(table[n].get("size", "nan"))),
            (float(table[n].get("input_price", 0)) + float(table[n].get("output_price", 0))) / 2,
        )
        for n in names
    ]
    prompts, rows, groups = [], [], []
    for split in ("train.json", "test.json"):
        for item in json.loads((root / split).read_text()):
            scores = item["scores"]
            if not all(n in scores for n in names):
                continue
            prompts.append(item["question"])
            rows.append([float(scores[n]) for n in names])
            groups.append(str(item.get("cluster_id", "")))
    return OutcomeSet("llmrouter", prompts, models, np.array(rows), False, groups)


# Arena-bench models: parameter counts are public estimates where vendors publish none
# (used only to order "small" and "large" and as a cost proxy when no price is known).
ARENA_MODELS = {
    "gpt-4-0613": (1760.0, 45.0),
    "gpt-4-0314": (1760.0, 45.0),
    "gpt-4-1106-preview": (1760.0, 20.0),
    "claude-2.1": (137.0, 16.0),
    "claude-2.0": (137.0, 16.0),
    "claude-1": (52.0, 16.0),
    "claude-instant-1": (20.0, 1.6),
    "gpt-3.5-turbo-0613": (20.0, 1.75),
    "gpt-3.5-turbo-0125": (20.0, 1.0),
    "gpt-3.5-turbo-1106": (20.0, 1.5),
    "mixtral-8x7b-instruct-v0.1": (46.7, 0.5),
    "Mixtral-8x7B-Instruct-v0.1": (46.7, 0.5),
    "mistral-7b-instruct": (7.2, 0.2),
    "Mistral-7B-Instruct-v0.2": (7.2, 0.2),
    "Llama-2-70b-chat": (70.0, 0.9),
    "llama-2-70b-chat": (70.0, 0.9),
    "vicuna-33b": (33.0, 0.6),
    "vicuna-33b-v1.3": (33.0, 0.6),
    "openchat-3.5": (7.2, 0.2),
    "Starling-LM-7B-alpha": (7.2, 0.2),
    "starling-lm-7b-alpha": (7.2, 0.2),
    "gpt-3.5-turbo": (20.0, 1.75),
    "mistralai/Mistral-7B-Instruct-v0.1": (7.2, 0.2),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": (46.7, 0.5),
    "openchat_3.5": (7.2, 0.2),
    "palm-2-chat-bison-001": (340.0, 1.0),
    "palm-2": (340.0, 1.0),
    "chat-bison": (340.0, 1.0),
    "gemini-pro": (600.0, 1.0),
    "tulu-2-dpo-70b": (70.0, 0.9),
    "yi-34b-chat": (34.0, 0.6),
    "dbrx-instruct": (132.0, 1.2),
}


def load_arena(root: Path = DATASETS / "arena-bench-v1") -> OutcomeSet:
    by_prompt: dict[str, dict[str, float]] = defaultdict(dict)
    text: dict[str, str] = {}
    with open(root / "grades.csv", newline="") as f:
        for r in csv.DictReader(f):
            try:
                by_prompt[r["prompt_id"]][r["model"]] = float(r["score"])
            except ValueError:
                continue
            text[r["prompt_id"]] = r["prompt"]
    model_names = sorted({m for d in by_prompt.values() for m in d})
    ids = [p for p, d in by_prompt.items() if all(m in d for m in model_names)]
    if len(ids) < 0.8 * len(by_prompt):  # keep models graded on most prompts
        counts = {m: sum(m in d for d in by_prompt.values()) for m in model_names}
        model_names = [m for m in model_names if counts[m] >= 0.95 * len(by_prompt)]
        ids = [p for p, d in by_prompt.items() if all(m in d for m in model_names)]
    models = [ModelInfo(m, *ARENA_MODELS.get(m, (float("nan"), float("nan")))) for m in model_names]
    outcomes = np.array([[(by_prompt[p][m] - 1.0) / 9.0 for m in model_names] for p in ids])
    return OutcomeSet("arena-bench-v1", [text[p] for p in ids], models, np.clip(outcomes, 0, 1), True)


def load_generic(outcomes_csv: Path, models_csv: Path) -> OutcomeSet:
    table = {}
    with open(models_csv, newline="") as f:
        for r in csv.DictReader(f):
            table[r["name"]] = ModelInfo(
                r["name"], float(r.get("params_b") or "nan"), float(r.get("price_per_mtok") or "nan")
            )
    prompts, rows = [], []
    with open(outcomes_csv, newline="") as f:
        reader = csv.DictReader(f)
        names = [c for c in (reader.fieldnames or []) if c != "prompt" and c in table]
        for r in reader:
            prompts.append(r["prompt"])
            rows.append([_bool(r[n]) for n in names])
    out = np.array(rows)
    graded = bool(((out > 0) & (out < 1)).any() or out.max() > 1)
    if out.max() > 1:
        out = (out - out.min()) / (out.max() - out.min())
    return OutcomeSet(Path(outcomes_csv).stem, prompts, [table[n] for n in names], out, graded)


LOADERS = {"mmlu": load_routellm_mmlu, "llmrouter": load_llmrouter, "arena": load_arena}
