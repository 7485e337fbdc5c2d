"""`edge-namm chat`: a terminal chat whose KV memory stays within a fixed budget."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_namm.cli.errors import friendly
from edge_namm.cli.options import (
    folder_option,
    memory_engine,
    memory_options,
    model_options,
    resolve_model,
    seed_option,
)

HELP = """commands:
  /memory       show which parts of the conversation the model still keeps
  /stats        memory statistics
  /save FILE    save the session: messages, KV memory, NAMM state and cold store
  /load FILE    continue a session saved with /save (same model and settings)
  /reset        forget the conversation
  /quit         exit (Ctrl-D works too; Ctrl-C stops a reply)"""


def render_memory(llm, width: int = 2000) -> str:
    """The logical history: hot text as is, cold (recallable) and forgotten stretches collapsed
    into markers, then what the last recall brought back."""
    history = llm.input_ids[: llm.n_tokens].tolist()
    kept = set(llm.kept_positions().tolist())
    cold_store = llm.memory.cold
    cold = set(cold_store.logical.tolist()) if cold_store is not None else set()
    parts: list[str] = []
    i = 0
    while i < len(history):
        state = "hot" if i in kept else "cold" if i in cold else "gone"
        j = i
        while (
            j < len(history) and ("hot" if j in kept else "cold" if j in cold else "gone") == state
        ):
            j += 1
        if state == "hot":
            parts.append(llm.detokenize(history[i:j]).decode("utf-8", errors="replace"))
        elif state == "cold":
            parts.append(click.style(f"[...{j - i} tokens in the cold store...]", fg="yellow"))
        else:
            parts.append(click.style(f"[...{j - i} tokens forgotten...]", fg="red"))
        i = j
    text = "".join(parts)
    if len(text) > width:
        text = "..." + text[-width:]
    summary = f"({len(kept)} of {llm.n_tokens} tokens kept)"
    if cold_store is not None:
        st = llm.stats
        where = "on disk" if st.cold_on_disk else "in RAM"
        summary += (
            f"\ncold store: {st.cold_tokens} tokens, {st.cold_bytes / (1 << 20):.1f} MiB {where};"
            f" {st.tokens_recalled} recalled so far, {st.tokens_forgotten} forgotten for good;"
            f" a large store is first ranked through {llm.recall_heads}"
        )
    recalled = llm.memory.last_recalled
    if len(recalled):
        words = llm.detokenize(llm.input_ids[recalled].tolist()).decode("utf-8", errors="replace")
        summary += f"\nrecalled for the last answer ({len(recalled)} tokens): {words[:300]!r}"
    return f"{text}\n{summary}"


@click.command()
@model_options
@memory_options(recall=True)
@click.option(
    "--cold-budget",
    type=click.IntRange(min=0),
    default=None,
    help="Most tokens the cold store keeps (lowest-scored forgotten first); default: no cap.",
)
@folder_option(
    "--cold-dir",
    help="Spill the cold store to memory-mapped files in this folder instead of RAM.",
)
@click.option(
    "--reposition/--absolute-positions",
    default=True,
    show_default=True,
    help="Renumber kept tokens' positions below the model's trained context, so conversations "
    "longer than it stay coherent (docs/ENGINE.md).",
)
@click.option("--system", default="You are a helpful assistant.", show_default=True)
@click.option(
    "--temp",
    "--temperature",
    "temp",
    type=float,
    default=None,
    help="Sampling temperature (llama.cpp: 0.8; default: the model card's, 0.2 for SmolLM2).",
)
@click.option("--top-k", type=int, default=None, help="Top-k sampling (llama.cpp: 40).")
@click.option("--top-p", type=float, default=None, help="Top-p sampling (llama.cpp: 0.95).")
@click.option("--min-p", type=float, default=None, help="Min-p sampling (llama.cpp: 0.05).")
@click.option(
    "--repeat-penalty", type=float, default=None, help="Repetition penalty (llama.cpp: 1.0)."
)
@click.option(
    "--repeat-last-n",
    type=int,
    default=64,
    show_default=True,
    help="Tokens the repetition penalty looks back over.",
)
@click.option("--max-tokens", "-n", type=int, default=512, show_default=True)
@seed_option
@friendly
def chat(
    model,
    n_gpu_layers,
    threads,
    memory,
    cold_budget,
    cold_dir,
    reposition,
    system,
    temp,
    top_k,
    top_p,
    min_p,
    repeat_penalty,
    repeat_last_n,
    max_tokens,
    seed,
) -> None:
    """Chat with a model whose KV memory never exceeds --budget cells."""
    from edge_namm.engine import SessionError

    model_file = resolve_model(model)
    sampling = sampling_options(model_file, temp, top_k, top_p, min_p, repeat_penalty)
    llm = memory_engine(
        model_file,
        **memory,
        n_gpu_layers=n_gpu_layers,
        threads=threads,
        reposition=reposition,
        cold_budget=cold_budget,
        cold_dir=cold_dir,
        last_n_tokens_size=repeat_last_n,
        seed=seed,
        progress=True,
    )
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    shown = memory["policy"] + ("+recall" if memory["recall"] else "")
    click.echo(
        f"edge-namm chat: policy {shown}, budget {memory['budget']} cells. /help for commands."
    )
    while True:
        try:
            line = input("> ")
        except EOFError:
            click.echo()
            break
        except KeyboardInterrupt:
            click.echo("\n(Ctrl-D or /quit to exit)")
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            if cmd in ("/quit", "/exit"):
                break
            if cmd == "/help":
                click.echo(HELP)
            elif cmd == "/memory":
                click.echo(render_memory(llm))
            elif cmd == "/stats":
                click.echo(json.dumps(llm.stats.as_dict(), indent=2))
            elif cmd == "/save" and arg:
                try:
                    llm.save_session(arg, extra={"messages": messages})
                except OSError as exc:
                    click.echo(f"could not save {arg}: {exc} (nothing was lost; try another path)")
                    continue
                size = Path(arg).stat().st_size / 2**20
                click.echo(
                    f"saved {len(messages)} messages and the KV memory to {arg} ({size:.1f} MiB)"
                )
            elif cmd == "/load" and arg:
                try:
                    extra = llm.load_session(arg)
                except SessionError as exc:
                    click.echo(f"could not load: {exc}")
                    continue
                messages = list(extra.get("messages", []))
                click.echo(
                    f"loaded {len(messages)} messages with their KV memory ({llm.n_tokens} tokens)"
                )
            elif cmd == "/reset":
                messages = messages[:1] if system else []
                llm.reset()
                click.echo("conversation forgotten")
            else:
                click.echo(f"unknown command {line!r}\n{HELP}")
            continue
        messages.append({"role": "user", "content": line})
        reply = _stream_reply(llm, messages, sampling, max_tokens, seed)
        messages.append({"role": "assistant", "content": reply})
        click.secho(llm.stats.status_line(), fg="cyan", err=True)
    llm.close()


def sampling_options(
    model_file: str,
    temp: float | None,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repeat_penalty: float | None,
) -> dict:
    """llama.cpp's sampling defaults, overridden by the model card's, overridden by flags."""
    from edge_namm.downloads import RECOMMENDED_SAMPLING

    out = {"temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}
    out.update(RECOMMENDED_SAMPLING.get(Path(model_file).name, {}))
    given = dict(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty)
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _stream_reply(llm, messages, sampling, max_tokens, seed) -> str:
    """Print the reply as it streams; Ctrl-C ends the reply, keeping what was said."""
    pieces: list[str] = []
    stream = None
    try:  # Ctrl-C may land while the prompt is formatted, prefilled or streamed
        stream = llm.create_chat_completion(
            messages=messages,
            stream=True,
            temperature=sampling["temp"],
            top_k=sampling["top_k"],
            top_p=sampling["top_p"],
            min_p=sampling["min_p"],
            repeat_penalty=sampling["repeat_penalty"],
            max_tokens=max_tokens,
            seed=seed,
        )
        for chunk in stream:
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                pieces.append(delta)
                click.echo(delta, nl=False)
    except KeyboardInterrupt:
        click.echo(" [interrupted]", nl=False)
    finally:
        if stream is not None:
            stream.close()
    click.echo()
    return "".join(pieces)
