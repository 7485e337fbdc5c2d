"""Write small random-weight llama- or gemma3-architecture GGUF files for tests and device checks.

The models are nonsense (random weights) but llama.cpp loads and runs them like any llama
model: RMSNorm, RoPE, grouped-query attention, SwiGLU, and a SentencePiece-style ("llama")
tokenizer with byte fallback. They make the native patch testable without the 96 MB
SmolLM2 download:

    from tiny_gguf import write_llama_gguf              # tests/ is on sys.path under pytest
    write_llama_gguf("/tmp/tiny.gguf")                  # 2 layers, n_embd 96, GQA 6/3

    python tests/tiny_gguf.py /tmp/tiny.gguf            # same, from the shell
    python tests/tiny_gguf.py /tmp/s.gguf --preset smollm2-135m   # SmolLM2-135M's shape, F16
    python tests/tiny_gguf.py /tmp/g.gguf --preset tiny-gemma3    # iSWA: 5 of 6 layers windowed

The gemma3 variant (Gemma 3's layer norms, QK-norm and interleaved sliding-window attention)
makes llama.cpp build an iSWA cache: a small cache for the windowed layers beside the base
cache of the full-attention ones, which is what edge-namm manages.

Needs the `gguf` package (a test extra of edge-namm).
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path

import numpy as np

# Shapes. "tiny" keeps SmolLM2's 3 KV heads (GQA groups of 2 here). "smollm2-135m" copies
# SmolLM2-135M's geometry (30 layers, 576 wide, 9 query heads over 3 KV heads, 49,152 tokens)
# so that throughput on it is comparable to the real model in size (F16 weights here, not the
# real model's Q4_1).
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_embd=96, n_head=6, n_head_kv=3, n_ff=192, n_vocab=512),
    "smollm2-135m": dict(
        n_layer=30, n_embd=576, n_head=9, n_head_kv=3, n_ff=1536, n_vocab=49152, dtype="f16"
    ),
    # Llama-3.2-1B's geometry (16 layers, 2,048 wide, 32 query heads over 8 KV heads), a
    # smaller vocabulary: long-context speed on a GPU at a 1B shape (~2.4 GB in F16)
    "llama-1b": dict(
        n_layer=16, n_embd=2048, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=32000, dtype="f16"
    ),
    # Gemma 3's pattern: every 6th layer has full attention, the others a window
    "tiny-gemma3": dict(
        n_layer=12,
        n_embd=64,
        n_head=4,
        n_head_kv=2,
        n_ff=128,
        n_vocab=512,
        arch="gemma3",
        sliding_window=64,
    ),
}

# token types of llama.cpp's vocabulary (llama_token_type)
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_SPACE = "\u2581"  # SentencePiece's word-boundary marker
_WORDS = (
    "the quick brown fox jumps over lazy dog edge devices run small language models with "
    "bounded memory keys are stored after rope hello world again more one two three four "
    "five six seven eight nine ten cache attention token budget evict keep"
).split()


def tiny_vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """(pieces, scores, types) of an SPM vocabulary: <unk> <s> </s>, the 256 byte tokens,
    single characters, then words with every prefix (SPM merges pairs whose concatenation is
    a token, so a word is reachable only through its prefixes), then filler tokens."""
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [_UNKNOWN, _CONTROL, _CONTROL] + [_BYTE] * 256
    scores = [0.0] * len(pieces)
    seen = set(pieces)

    def add(piece: str) -> None:
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
            types.append(_NORMAL)
            scores.append(float(len(piece)))  # longer merges win

    for ch in _SPACE + string.ascii_lowercase + string.digits + ".,:;!?'\"()-":
        add(ch)
    for d in string.digits:
        add(_SPACE + d)
    for word in _WORDS:
        for end in range(1, len(word) + 1):
            add(_SPACE + word[:end])
    if len(pieces) > n_vocab:
        raise ValueError(f"n_vocab must be at least {len(pieces)}")
    i = 0
    while len(pieces) < n_vocab:  # unreachable through merges: pads the vocabulary size
        add(f"{_SPACE}filler{i}")
        i += 1
    return pieces, scores, types


def write_llama_gguf(
    path: str | Path,
    *,
    n_layer: int = 2,
    n_embd: int = 96,
    n_head: int = 6,
    n_head_kv: int = 3,
    n_ff: int = 192,
    n_vocab: int = 512,
    n_ctx_train: int = 8192,
    dtype: str = "f32",
    seed: int = 0,
    arch: str = "llama",
    sliding_window: int = 0,
) -> Path:
    """Write a random-weight GGUF and return its path. `dtype` (f32 or f16) applies to the
    matrices; norms stay float32 as llama.cpp expects. `arch` is "llama" or "gemma3" (which
    adds QK-norm and post-norms, and sliding-window attention when `sliding_window` > 0)."""
    import gguf

    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head and n_head by n_head_kv")
    wtype = {"f32": np.float32, "f16": np.float16}[dtype]
    head_dim = n_embd // n_head
    n_embd_kv = head_dim * n_head_kv
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        # numpy [rows, cols] = ggml ne [cols, rows]: y = W x with x of size cols
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(wtype)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arch not in ("llama", "gemma3"):
        raise ValueError(f"arch must be llama or gemma3, got {arch}")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"edge-namm random {arch} {n_layer}x{n_embd}")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    if arch == "gemma3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        if sliding_window:
            writer.add_sliding_window(sliding_window)
    writer.add_file_type(
        gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    )
    pieces, scores, types = tiny_vocab(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    writer.add_tensor("token_embd.weight", mat(n_vocab, n_embd))
    for il in range(n_layer):
        p = f"blk.{il}."
        writer.add_tensor(p + "attn_norm.weight", norm(n_embd))
        # sharper-than-uniform attention: scale Q so q.k has a spread of a few units
        writer.add_tensor(p + "attn_q.weight", (mat(n_embd, n_embd) * 2).astype(wtype))
        writer.add_tensor(p + "attn_k.weight", (mat(n_embd_kv, n_embd) * 2).astype(wtype))
        writer.add_tensor(p + "attn_v.weight", mat(n_embd_kv, n_embd))
        writer.add_tensor(p + "attn_output.weight", mat(n_embd, n_embd))
        writer.add_tensor(p + "ffn_norm.weight", norm(n_embd))
        writer.add_tensor(p + "ffn_gate.weight", mat(n_ff, n_embd))
        writer.add_tensor(p + "ffn_up.weight", mat(n_ff, n_embd))
        writer.add_tensor(p + "ffn_down.weight", mat(n_embd, n_ff))
        if arch == "gemma3":
            writer.add_tensor(p + "attn_q_norm.weight", norm(head_dim))
            writer.add_tensor(p + "attn_k_norm.weight", norm(head_dim))
            writer.add_tensor(p + "post_attention_norm.weight", norm(n_embd))
            writer.add_tensor(p + "post_ffw_norm.weight", norm(n_embd))
    writer.add_tensor("output_norm.weight", norm(n_embd))
    writer.add_tensor("output.weight", mat(n_vocab, n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_llama_gguf(args.path, seed=args.seed, **PRESETS[args.preset])
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, preset {args.preset})")


if __name__ == "__main__":
    main()
