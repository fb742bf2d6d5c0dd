"""Distil the shipped static embedding model from all-MiniLM-L6-v2 (model2vec's recipe, in numpy).

Each WordPiece token is run through the full model as ``[CLS] token [SEP]``; its own output
vector is kept; the 30,522 x 384 table is centred and PCA-reduced. Takes ~200 s on 2 cores.

    uv run python scripts/distill_static_embeddings.py --dims 128
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np

from turnout.embeddings.minilm import MiniLMEncoder, model_dir
from turnout.embeddings.static import DATA


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()
    enc = MiniLMEncoder()
    vocab = enc.w["embeddings.word_embeddings.weight"].shape[0]
    table = np.zeros((vocab, enc.dims), np.float32)
    t0 = time.perf_counter()
    for s in range(0, vocab, args.batch):
        ids = np.arange(s, min(vocab, s + args.batch))
        batch = np.stack([np.full_like(ids, 101), ids, np.full_like(ids, 102)], axis=1)
        table[s : s + len(ids)] = enc.forward(batch, np.ones(batch.shape, np.float32))[:, 1]
    centred = table - table.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred[::2], full_matrices=False)
    kept = float((sv[: args.dims] ** 2).sum() / (sv**2).sum())
    reduced = (centred @ vt[: args.dims].T).astype(np.float16)
    DATA.mkdir(exist_ok=True)
    out = DATA / f"static-minilm-l6-{args.dims}.npy"
    np.save(out, reduced)
    shutil.copy(model_dir() / "tokenizer.json", DATA / "minilm-tokenizer.json")
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {kept:.1%} variance kept) in {time.perf_counter() - t0:.0f}s"
    )


if __name__ == "__main__":
    main()
