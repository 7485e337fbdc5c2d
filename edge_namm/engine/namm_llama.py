"""NammLlama: llama_cpp.Llama whose KV cache is kept under a fixed budget by a policy.

The physical context holds `budget + update_interval` cells; the logical conversation is
unbounded. Every `update_interval` tokens (prompt or generated) the policy scores the cached
tokens and the engine evicts until at most `budget` remain. Positions stay absolute: survivors
keep their RoPE positions and new tokens continue at the next one (see docs/ENGINE.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from edge_namm import native
from edge_namm.engine.cold import ColdStoreError
from edge_namm.engine.errors import CacheFullError, EngineConfigError, ModelFileError
from edge_namm.engine.memory import KVMemory
from edge_namm.engine.positions import LogicalPositionContext, PositionMap, renumber
from edge_namm.engine.retrieval_heads import resolve_recall_heads
from edge_namm.engine.stats import MemoryStats
from edge_namm.features import FeatureConfig
from edge_namm.policies import attention_free, make_policy
from edge_namm.policies.base import Policy

LOGICAL_N_CTX = 2**31 - 1
# bytes per stored value of the KV cache types llama.cpp accepts (ggml type id -> bytes)
_GGML_BYTES_PER_VALUE = {
    0: 4.0,
    1: 2.0,
    30: 2.0,
    8: 34 / 32,
    2: 18 / 32,
    3: 20 / 32,
    6: 22 / 32,
    7: 24 / 32,
}  # what create_completion checks prompts against: no logical limit


def _recall_cap(recall_max: int | float | None, budget: int) -> int:
    """recall_max as tokens: an int counts tokens, a float in (0, 1] is a share of the budget."""
    if recall_max is None:
        return max(16, budget // 4)
    if isinstance(recall_max, (int, np.integer)) and not isinstance(recall_max, bool):
        if recall_max >= 1:
            return int(recall_max)
    elif isinstance(recall_max, (float, np.floating)) and 0.0 < recall_max <= 1.0:
        return max(1, int(budget * recall_max))
    raise EngineConfigError(
        "recall_max must be a whole number of tokens >= 1 or a fraction of the budget in "
        f"(0, 1] such as 0.5, got {recall_max!r}"
    )


def check_model_file(model_path: str | Path) -> Path:
    """Fail early, with a next step, on a missing or non-GGUF model file."""
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ModelFileError(
            f"model file not found: {path}. Pass a local .gguf path, or run `edge-namm pull` "
            "to download the default SmolLM2-135M-Instruct model."
        )
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(
            f"{path} is not a GGUF file (starts with {magic!r}). Convert the model to GGUF "
            "(llama.cpp's convert_hf_to_gguf.py) or re-download it."
        )
    return path


def _feature_config_of(policy: Policy) -> FeatureConfig | None:
    """A policy's scorer dictates the feature constants it was trained with."""
    config = policy.feature_config
    return FeatureConfig.from_dict(config) if config else None


@dataclass
class NammLlamaState:
    """llama-cpp-python's state plus edge-namm's side state (features, counters)."""

    llama: llama_cpp.LlamaState
    memory: dict
    stats: dict
    since_update: int
    positions: tuple[int, int] = (0, 0)  # (shift, exact_from) of the PositionMap
    chat: tuple[bytes, int] | None = None  # the conversation text the cache holds


class NammLlama(llama_cpp.Llama):
    """A llama_cpp.Llama with a bounded, policy-managed KV cache.

    Extra arguments: `policy` (name or Policy instance), `scorer` (scorer file path or object,
    for `namm`), `scorer_backend` ("auto": ONNX Runtime when available, "onnx", "numpy") and
    `scorer_providers` (ONNX Runtime providers, default chosen automatically), `budget` (cells
    kept after each update), `update_interval` (tokens between updates, multiple of 16),
    `chunk` (prefill batch size, <= update_interval), `seed`
    (eviction RNG), `record_attention` (fold attention features even when the policy needs
    none, e.g. to estimate normalisation statistics under a full cache; default: as the policy
    needs), `reposition` (renumber survivors' positions 0..k-1 whenever the next position would
    pass `reposition_limit`, default the model's trained context; see engine/positions.py),
    `progress` (prefill progress bar), `recall` (keep evicted tokens byte-exact in a cold store
    and, after each new prompt, swap back the ones its last `recall_window` tokens attend to,
    at most `recall_max` per prompt (tokens, or a fraction of the budget such as 0.5; default
    budget / 4), then decode the last
    `recall_redecode` tokens again (default: the whole window) so they see them;
    `recall_heads` picks the (layer, KV head) pairs the coarse pass over a large cold store
    reads: "auto" (the calibration shipped for this model, else all), "all", a heads file or
    a list of pairs (see engine/retrieval_heads.py);
    `cold_budget` caps the cold store in tokens, `cold_dir` spills it to memory-mapped files;
    see engine/recall.py), `feature_config` (feature constants when the policy has no scorer to
    dictate them, e.g. recording features for training). Other arguments go to llama_cpp.Llama;
    `n_ctx` is derived from the budget and must not be given.
    """

    def __init__(
        self,
        model_path: str,
        *,
        policy: str | Policy = "namm",
        scorer: Any = None,
        scorer_backend: str = "auto",
        scorer_providers: Any = None,
        budget: int = 1024,
        update_interval: int = 512,
        chunk: int = 128,
        policy_kwargs: dict | None = None,
        record_attention: bool | None = None,
        reposition: bool = False,
        reposition_limit: int | None = None,
        progress: bool = False,
        recall: bool = False,
        recall_window: int = 32,
        recall_redecode: int | None = None,
        recall_max: int | float | None = None,
        recall_heads: Any = "auto",
        cold_budget: int | None = None,
        cold_dir: str | None = None,
        feature_config: FeatureConfig | None = None,
        flash_attn: bool = False,
        verbose: bool = False,
        seed: int = llama_cpp.LLAMA_DEFAULT_SEED,
        **kwargs: Any,
    ) -> None:
        if "n_ctx" in kwargs:
            raise EngineConfigError(
                "NammLlama sizes the context itself (budget + update_interval cells); "
                "pass budget= instead of n_ctx="
            )
        self.policy = (
            policy
            if isinstance(policy, Policy)
            else make_policy(
                policy,
                scorer=scorer,
                scorer_backend=scorer_backend,
                scorer_providers=scorer_providers,
                **(policy_kwargs or {}),
            )
        )
        if update_interval <= 0 or update_interval % 16:
            raise EngineConfigError(
                "update_interval must be a positive multiple of 16 (the STFT hop), "
                f"got {update_interval}"
            )
        if not 0 < chunk <= update_interval:
            raise EngineConfigError(
                f"chunk must be between 1 and update_interval ({update_interval}), got {chunk}"
            )
        protected = self.policy.n_protected
        if recall:  # recall also keeps the newest recall_window + 1 tokens through updates
            protected = self.policy.n_sink + max(self.policy.n_recent, recall_window + 1, 1)
        min_budget = chunk + protected
        if budget < min_budget:
            raise EngineConfigError(
                f"budget of {budget} cells is too small: it must hold at least one chunk ({chunk}) "
                f"plus the {protected} protected tokens, i.e. >= {min_budget}. "
                "Raise --budget or lower --chunk."
            )
        record = self.policy.needs_attention if record_attention is None else record_attention
        if flash_attn and record:
            raise EngineConfigError(
                f"policy '{self.policy.name}' reads attention weights, which flash attention never "
                "materialises: use flash_attn=False or a policy that needs no attention "
                f"({', '.join(attention_free())})"
            )
        quantized_v = kwargs.get("type_v") not in (None, 0, 1, 30)  # f32, f16, bf16 are fine
        if recall and (flash_attn or quantized_v):
            raise EngineConfigError(
                "recall scores cold tokens with the queries of the attention graph, which flash "
                "attention (also forced on by a quantized V cache) fuses away: use "
                "flash_attn=False and an f16/f32 V cache, or recall=False"
            )
        if recall and not 0 < recall_window <= chunk:
            raise EngineConfigError(
                f"recall_window must be between 1 and chunk ({chunk}) tokens, got {recall_window}"
            )
        recall_max = _recall_cap(recall_max, budget)
        if cold_budget is not None and cold_budget < 0:
            raise EngineConfigError(
                f"cold_budget must be >= 0 tokens (or None for no cap), got {cold_budget}"
            )
        if quantized_v and record:
            raise EngineConfigError(
                "a quantized V cache makes llama.cpp use flash attention, which never "
                f"materialises attention weights that policy '{self.policy.name}' reads: "
                f"drop type_v or use one of {', '.join(attention_free())}"
            )
        native.require()
        path = check_model_file(model_path)
        self.budget = budget
        self.update_interval = update_interval
        self.chunk = chunk
        self.progress = progress
        self._memory: KVMemory | None = None
        self._chat: tuple[bytes, int] | None = None  # (text, tokens) the cache holds
        self._chat_pending: tuple[bytes, list[int]] | None = None
        features = _feature_config_of(self.policy) or feature_config
        # KVzip scores with a repeat pass; a NAMM trained with it folded in needs it too
        self._repeat = bool(self.policy.needs_repeat or (features and features.repeat))
        try:
            # a repeat pass needs room for one interval and its prompt on top
            extra = update_interval + 64 if self._repeat else 0
            super().__init__(
                str(path),
                n_ctx=budget + update_interval + extra,
                n_batch=chunk,
                n_ubatch=chunk,
                flash_attn=flash_attn,
                verbose=verbose,
                seed=seed,
                **kwargs,
            )
        except ValueError as exc:
            raise ModelFileError(
                f"llama.cpp could not load {path} ({exc}). The file may be truncated or from an "
                "unsupported architecture: re-download it (`edge-namm pull`) or try another GGUF."
            ) from exc
        native.check_supported(self._ctx.ctx)
        self._n_ctx = LOGICAL_N_CTX
        n_embd_k, bytes_per_cell = self._kv_geometry()
        self._memory = KVMemory(
            self._ctx.ctx,
            self.policy,
            budget=budget,
            max_queries=chunk,
            n_embd_k=n_embd_k,
            bytes_per_cell=bytes_per_cell,
            feature_config=features,
            record_attention=record,
            seed=seed if seed != llama_cpp.LLAMA_DEFAULT_SEED else 0,
        )
        #: the recorder of training turns the repeat pass off while it measures what the
        #: question attends to, so that the repeat does not count as the question's attention
        self.repeat_enabled = True
        self.recall = recall
        self.recall_window = recall_window
        self.recall_redecode = recall_redecode
        self.recall_max = recall_max
        #: what the coarse pass over a large cold store reads, in words (for /memory, info)
        self.recall_heads = "none (recall off)"
        if recall:
            try:
                mask, self.recall_heads = resolve_recall_heads(
                    recall_heads, self.metadata, self._memory.n_layer, self._memory.n_head_kv
                )
            except EngineConfigError:
                self.close()  # the model is loaded by now: free it before refusing
                raise
            self._memory.coarse_heads = mask
            self._memory.protect_recent = recall_window + 1
            self._memory.enable_cold(
                lambda logical: self.input_ids[logical], cold_budget=cold_budget, cold_dir=cold_dir
            )
        self._since_update = 0
        self._positions = PositionMap()
        self.reposition = reposition
        self.reposition_limit = reposition_limit or llama_cpp.llama_model_n_ctx_train(
            self._model.model
        )
        if reposition:
            if self.reposition_limit < budget + 2 * update_interval:
                raise EngineConfigError(
                    f"reposition_limit ({self.reposition_limit}) must be at least budget + 2 x "
                    f"update_interval ({budget + 2 * update_interval}); lower the budget or turn "
                    "re-positioning off (reposition=False, chat: --absolute-positions)"
                )
            self._ctx = LogicalPositionContext(self._ctx, self._positions)

    def _kv_geometry(self) -> tuple[int, int]:
        """(K width per layer, K+V bytes per cell over all layers) from the model's shape and
        cache types. All layers, also for an iSWA model: with llama.cpp's default full-size
        window cache (``swa_full``) every kept token holds a cell in both caches."""
        arch = self.metadata.get("general.architecture", "llama")
        n_head = llama_cpp.llama_model_n_head(self._model.model)
        n_head_kv = llama_cpp.llama_model_n_head_kv(self._model.model)
        n_layer = llama_cpp.llama_model_n_layer(self._model.model)
        head_k = int(self.metadata.get(f"{arch}.attention.key_length", self.n_embd() // n_head))
        head_v = int(self.metadata.get(f"{arch}.attention.value_length", head_k))
        bytes_k = _GGML_BYTES_PER_VALUE.get(self.context_params.type_k, 2.0)
        bytes_v = _GGML_BYTES_PER_VALUE.get(self.context_params.type_v, 2.0)
        per_cell = n_layer * n_head_kv * (head_k * bytes_k + head_v * bytes_v)
        return n_head_kv * head_k, int(per_cell)

    # --- llama-cpp-python overrides ----------------------------------------------------------
    @property
    def stats(self) -> MemoryStats:
        return self._memory.stats

    @property
    def memory(self) -> KVMemory:
        return self._memory

    def reset(self, stats: bool = False) -> None:
        """Forget the conversation (llama-cpp-python's reset); `stats=True` also zeroes the
        memory counters."""
        super().reset()
        self._chat = None
        if self._memory is not None:
            if stats:
                self._memory.reset_stats()
            self._memory.reset()
            self._since_update = 0
            self._positions.reset()

    # --- token-exact conversations -------------------------------------------------------------
    # A chat turn re-renders the whole conversation as text; tokenizing that text again would
    # not give back the tokens actually decoded (a reply's tokens are the model's, not the
    # tokenizer's), so llama-cpp-python's prefix reuse would re-read the history every turn.
    # Instead the text the cache holds is remembered with its token count: a rendering that
    # extends it becomes those very tokens plus the new text's.
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        chat = getattr(self, "_chat", None)
        if special and chat is not None and text.startswith(chat[0]) and self.n_tokens >= chat[1]:
            delta = text[len(chat[0]) :]
            tokens = [*self.input_ids[: chat[1]].tolist(), *super().tokenize(delta, False, True)]
        else:
            tokens = super().tokenize(text, add_bos, special)
        if special:
            self._chat_pending = (text, tokens)
        return tokens

    def create_completion(self, prompt: str | list[int], *args: Any, **kwargs: Any) -> Any:
        if len(prompt) == 0:
            raise ValueError("empty prompt: give at least one token of text")
        if not isinstance(prompt, str):
            self._check_tokens(prompt)
        pending, self._chat_pending = getattr(self, "_chat_pending", None), None
        self._chat = None
        out = super().create_completion(prompt, *args, **kwargs)
        if pending is None or list(prompt) != pending[1]:
            return out
        if kwargs.get("stream"):
            return self._remember_chat_after(out, pending[0], len(prompt))
        self._remember_chat(pending[0], len(prompt))
        return out

    def _remember_chat(self, prompt_text: bytes, n_prompt: int) -> None:
        """The cache now holds `prompt_text` followed by the generated tokens."""
        reply = self.detokenize(self.input_ids[n_prompt : self.n_tokens].tolist())
        self._chat = (prompt_text + reply, self.n_tokens)

    def _remember_chat_after(self, chunks: Any, prompt_text: bytes, n_prompt: int) -> Any:
        try:
            yield from chunks
        finally:
            self._remember_chat(prompt_text, n_prompt)

    def _check_tokens(self, tokens: Sequence[int]) -> None:
        """llama.cpp aborts on token ids outside the vocabulary: refuse them with a next step."""
        arr = np.asarray(tokens)
        bad = (arr < 0) | (arr >= self._n_vocab)
        if bad.any():
            raise ValueError(
                f"token id {int(arr[bad][0])} is outside the vocabulary (0..{self._n_vocab - 1}) "
                "of this model: tokenize text with this model's own tokenizer (llm.tokenize)"
            )

    def eval(self, tokens: Sequence[int]) -> None:
        """Decode tokens in chunks, folding attention and evicting every update_interval; with
        recall, a prompt (more than one token) ends with a recall from the cold store."""
        tokens = list(tokens)
        cold = self._memory.cold
        # a cold store still empty may fill during this prompt: capture the queries anyway
        if not (self.recall and cold is not None and len(tokens) > 1):
            self._decode_tokens(tokens, None)
            return
        window = min(self.recall_window, len(tokens))
        queries, scales = self._decode_tokens(tokens, None, query_tail=window)
        if not len(cold):
            return
        t0 = time.perf_counter()
        # the token before the window must stay: the re-decode continues right after it
        if self._memory.recall(queries, scales, window + 1, self.recall_max):
            redecode = window if self.recall_redecode is None else self.recall_redecode
            self._redecode_last(max(1, min(redecode, window)))
        self._memory.stats.seconds_recall += time.perf_counter() - t0

    def _repeat_pass(self) -> None:
        """KVzip's scoring pass: the model repeats the last interval's tokens after a repeat
        prompt, teacher-forced, with attention capture on; then the repeat is removed. Each
        cell's largest repeat attention becomes its repeat score or, when the feature config
        asks for it, the repeat queries are folded into the attention features."""
        mem = self._memory
        fold = mem.features.config.repeat
        t0 = time.perf_counter()
        prompt = super().tokenize(self.policy.repeat_prompt.encode(), False, False)
        repeat = (
            prompt + self.input_ids[self.n_tokens - self.update_interval : self.n_tokens].tolist()
        )
        start = self.n_tokens - self._positions.shift  # physical position after the newest
        positions = native.cell_positions(self._ctx.ctx)
        chunk = np.flatnonzero(positions >= start - self.update_interval)  # this interval's cells
        best = np.zeros(mem.n_cells, dtype=np.float32)
        armed = mem.capture.armed
        mem.capture.clear()
        mem.capture.arm()
        try:
            for i in range(0, len(repeat), self.chunk):
                batch = repeat[i : i + self.chunk]
                self._batch.set_batch(batch=batch, n_past=start + i, logits_all=False)
                self._ctx.decode(self._batch)
                if fold:
                    mem.features.fold(mem.capture.rows())
                    mem.capture.clear()
                else:
                    mem.fold_repeat_rows(best)
        finally:
            now = native.cell_positions(self._ctx.ctx)
            self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)  # logical: the repeat goes
            mem.capture.clear()
            if not armed:
                mem.capture.disarm()
            # the repeat's own cells were never the memory's: their folded state must go too
            mem.features.reset_cells(np.flatnonzero(now >= start))
            mem.before_decode()
        if not fold:
            mem.set_repeat_scores(chunk, best[chunk])
        mem.stats.seconds_namm += time.perf_counter() - t0

    def _redecode_last(self, window: int) -> None:
        """Remove the newest `window` tokens' cells and decode those tokens again in place.
        A batch must continue right after the newest position in the cache, so when an update
        evicted tokens just before the window, the re-decode starts after the last one kept."""
        mem = self._memory
        # tokens before the last renumbering have no exact physical position: never start there
        start = max(self.n_tokens - window, self._positions.exact_from)
        if start >= self.n_tokens:
            return
        kept = mem.kept_logical()
        below = kept[kept < start]
        if len(below) and below[-1] != start - 1:
            start = max(int(below[-1]) + 1, self._positions.exact_from)
        # llama.cpp takes a batch only right after the newest position left in the cache; when
        # re-positioning made that impossible, the window keeps the values it has
        first = start - self._positions.shift  # physical position the re-decode starts at
        actual = native.cell_positions(self._ctx.ctx)
        left = actual[(actual >= 0) & (actual < first)]
        if len(left) and int(left.max()) + 1 != first:
            return
        if not self._ctx.kv_cache_seq_rm(-1, start, -1):
            return
        mem.drop_cold_from(start)
        mem.before_decode()
        tokens = self.input_ids[start : self.n_tokens].tolist()
        for i in range(0, len(tokens), self.chunk):
            batch = tokens[i : i + self.chunk]
            self._batch.set_batch(
                batch=batch, n_past=start + i - self._positions.shift, logits_all=self._logits_all
            )
            t0 = time.perf_counter()
            self._ctx.decode(self._batch)
            mem.stats.seconds_llama += time.perf_counter() - t0
            mem.after_decode(len(batch), self._positions.shift, fold=False)

    def eval_logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        """Decode tokens and return log p(tokens[i] | everything before it) for i >= 1.

        The first token's probability needs logits from before this call, so it is not
        returned. Used for perplexity under a budget (StreamingLLM-style evaluation). Each
        chunk's logits are reduced as they arrive, in llama.cpp's buffer: with a 262k-token
        vocabulary (Gemma 3) a copy of all of them would be ~1 GB and seconds of numpy.
        """
        tokens = list(tokens)
        out = np.empty(max(len(tokens) - 1, 0))

        def reduce(start: int, logits: np.ndarray) -> None:
            rows = logits[: max(0, len(tokens) - 1 - start)]
            if len(rows) == 0:
                return
            peak = rows.max(axis=1)
            shifted = np.subtract(rows, peak[:, None])
            np.exp(shifted, out=shifted)
            logz = np.log(shifted.sum(axis=1, dtype=np.float64)) + peak
            targets = tokens[start + 1 : start + 1 + len(rows)]
            out[start : start + len(rows)] = rows[np.arange(len(rows)), targets] - logz

        self._decode_tokens(tokens, reduce)
        return out

    def _decode_tokens(
        self,
        tokens: list[int],
        on_logits: Callable[[int, np.ndarray], None] | None,
        query_tail: int = 0,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Decode in chunks with memory updates; ``on_logits(i, logits)`` gets every chunk's
        logits [n, n_vocab] (a view of llama.cpp's buffer, valid until the next decode) for the
        chunk starting at ``tokens[i]``. With ``query_tail`` the last tokens are decoded as a
        batch of their own whose queries are captured: returns (queries [L, H, tail, d], softmax
        scales [L]) for recall."""
        mem = self._memory
        self._check_tokens(tokens)
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        # a prefix reuse (an edited or regenerated message) moved the history back: cold copies
        # of the discarded branch must not be recalled into the new one
        mem.drop_cold_from(self.n_tokens)
        mem.before_decode()
        bar = None
        if self.progress and len(tokens) > 2 * self.chunk:
            from tqdm import tqdm

            bar = tqdm(total=len(tokens), desc="prefill", unit="tok", leave=False)
        i = 0
        tail_start = len(tokens) - query_tail if query_tail else len(tokens)
        queries = None
        stash: list[np.ndarray] = []  # queries set aside around a repeat pass
        try:
            while i < len(tokens):
                n = min(self.chunk, self.update_interval - self._since_update, len(tokens) - i)
                if i < tail_start:
                    n = min(n, tail_start - i)
                elif i == tail_start:
                    mem.capture_queries(True)
                if n > mem.free_cells():
                    raise CacheFullError(
                        f"the KV cache is full ({mem.n_cells} cells) and policy "
                        f"'{self.policy.name}' did not free room: raise budget= or use an "
                        "evicting policy"
                    )
                batch = tokens[i : i + n]
                all_logits = self._logits_all or on_logits is not None
                n_past = self.n_tokens - self._positions.shift
                self._batch.set_batch(batch=batch, n_past=n_past, logits_all=all_logits)
                t0 = time.perf_counter()
                self._ctx.decode(self._batch)
                mem.stats.seconds_llama += time.perf_counter() - t0
                if on_logits is not None:
                    logits = np.ctypeslib.as_array(
                        self._ctx.get_logits(), shape=(n * self._n_vocab,)
                    )
                    on_logits(i, logits.reshape(n, self._n_vocab))
                mem.after_decode(n, self._positions.shift)
                self._store_tokens(batch)
                self._since_update += n
                if self._since_update >= self.update_interval:
                    if self._repeat and self.repeat_enabled:
                        capturing = query_tail and i >= tail_start
                        if capturing:  # the repeat pass must not add to the prompt's queries
                            stash.append(mem.capture.queries().copy())
                            mem.capture_queries(False)
                        self._repeat_pass()
                        if capturing:
                            mem.capture_queries(True)
                    mem.update()
                    self._since_update = 0
                    self._maybe_reposition()
                i += n
                if bar is not None:
                    bar.update(n)
            if query_tail:
                rows = np.concatenate([*stash, mem.capture.queries()], axis=2)
                queries = (rows, mem.capture.kq_scales())
        finally:
            if bar is not None:
                bar.close()
            if query_tail and i > tail_start:
                mem.capture_queries(False)
        self._requires_eval = False
        return queries

    def _maybe_reposition(self) -> None:
        next_physical = self.n_tokens - self._positions.shift
        if not self.reposition or next_physical + self.update_interval <= self.reposition_limit:
            return
        kept = renumber(self._ctx, native.cell_positions(self._ctx.ctx)[self._memory.occupied()])
        self._positions.shift = self.n_tokens - kept
        self._positions.exact_from = self.n_tokens
        self._memory.positions_moved()
        self._memory.cold_positions_renumbered(self._memory.kept_logical())
        self._memory.stats.renumberings += 1

    def _store_tokens(self, batch: list[int]) -> None:
        """Append to input_ids, growing it: the logical history outlives the physical cache."""
        end = self.n_tokens + len(batch)
        if end > len(self.input_ids):
            grown = np.zeros(max(end, 2 * len(self.input_ids)), dtype=np.intc)
            grown[: self.n_tokens] = self.input_ids[: self.n_tokens]
            self.input_ids = grown
        self.input_ids[self.n_tokens : end] = batch
        self.n_tokens = end

    def kept_positions(self) -> np.ndarray:
        """Logical positions still in the cache, oldest first (what the model remembers)."""
        return self._memory.kept_logical()

    def save_state(self) -> NammLlamaState:
        return NammLlamaState(
            llama=super().save_state(),
            memory=self._memory.state_dict(),
            stats=self._memory.stats.__dict__.copy(),
            since_update=self._since_update,
            positions=(self._positions.shift, self._positions.exact_from),
            chat=self._chat,
        )

    def load_state(self, state: NammLlamaState) -> None:
        if not isinstance(state, NammLlamaState):
            raise TypeError("NammLlama.load_state takes the NammLlamaState from save_state()")
        cold = self._memory.cold
        saved_cold = state.memory.get("cold")
        if cold is not None and saved_cold is not None:
            cold.check_layout(saved_cold)  # before llama.cpp touches the cache
        elif saved_cold is not None and len(saved_cold["logical"]):
            raise ColdStoreError(
                "this state carries a cold store but this NammLlama was built with recall=False; "
                "build it with recall=True to load it"
            )
        ls = state.llama
        rows = min(ls.n_tokens, self.scores.shape[0])
        if ls.scores.shape[0] != rows:  # llama-cpp-python copies scores into scores[:n_tokens]
            ls = llama_cpp.LlamaState(
                input_ids=ls.input_ids,
                scores=ls.scores[:rows],
                n_tokens=ls.n_tokens,
                llama_state=ls.llama_state,
                llama_state_size=ls.llama_state_size,
                seed=ls.seed,
            )
        super().load_state(ls)
        self._chat = getattr(state, "chat", None)
        self._memory.load_state_dict(state.memory)
        self._memory.stats.__dict__.update(state.stats)
        self._since_update = state.since_update
        self._positions.shift, self._positions.exact_from = state.positions

    def save_session(self, path: str | Path, extra: dict | None = None) -> Path:
        """Save the conversation with its KV memory, feature state and cold store to one file
        (engine/session.py); `extra` is stored alongside (e.g. chat messages)."""
        from edge_namm.engine.session import save_session

        return save_session(self, path, extra)

    def load_session(self, path: str | Path) -> dict:
        """Continue a conversation saved with `save_session` (same model and engine settings;
        SessionError says what differs); returns the `extra` saved with it."""
        from edge_namm.engine.session import load_session

        return load_session(self, path)

    def close(self) -> None:
        if getattr(self, "_memory", None) is not None:
            self._memory.close()
            self._memory = None
        if hasattr(self, "_stack"):  # absent when __init__ failed before llama_cpp.Llama's
            super().close()
