"""emg2qwerty transformer speed: ours vs the same architecture built from transformers' Wav2Vec2 modules.

    python benchmarks/emg2qwerty_speed.py --out docs/results/emg2qwerty_speed.json

For TINY, SMALL and LARGE: one 4 s window with its padding (10,000 samples, 32 channels) at batch 1 in
float32 (latency; eager, and replayed from a CUDA graph on a GPU), and windows/s at batch 64 under bf16
autocast (throughput, eager), inference.
The Wav2Vec2 twin has the same parameter count (checked); its first convolution takes the 32 channels.
Plus the causal TINY's streaming step: 10 ms of new signal (20 samples) with the KV cache, measured after
a 4 s history, and how far its output is from full-window inference.
"""

from __future__ import annotations

import argparse

import torch
from timing import time_call, write_results
from torch import nn

from finetune.emg_models import CONV_DIM, CONV_KERNEL, CONV_STRIDE, SIZES, EmgCTCConfig, EmgCTCModel

N_TIMES, N_CHANNELS = 10_000, 32


class Wav2Vec2Twin(nn.Module):
    """The sEMG paper's transformer from transformers' Wav2Vec2 modules (32-channel first conv)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        config = Wav2Vec2Config(
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=16,
            intermediate_size=4 * width,
            conv_dim=CONV_DIM,
            conv_kernel=CONV_KERNEL,
            conv_stride=CONV_STRIDE,
            conv_bias=False,
            feat_extract_norm="group",
            num_conv_pos_embeddings=128,
            num_conv_pos_embedding_groups=16,
            do_stable_layer_norm=True,
            mask_time_prob=0.0,
            apply_spec_augment=False,
            vocab_size=99,
        )
        config._attn_implementation = "sdpa"
        self.model = Wav2Vec2Model(config)
        self.model.masked_spec_embed = None
        first = self.model.feature_extractor.conv_layers[0]
        first.conv = nn.Conv1d(N_CHANNELS, CONV_DIM[0], CONV_KERNEL[0], CONV_STRIDE[0], bias=False)
        first.layer_norm = nn.GroupNorm(CONV_DIM[0], CONV_DIM[0], affine=True)
        self.lm_head = nn.Linear(width, 99)

    def forward(self, emg: torch.Tensor) -> torch.Tensor:
        features = emg
        for layer in self.model.feature_extractor.conv_layers:
            features = layer(features)
        hidden, _ = self.model.feature_projection(features.transpose(1, 2))
        hidden = self.model.encoder(hidden).last_hidden_state
        return self.lm_head(hidden)


def graph_replay(fn):
    """Capture `fn()` (whose inputs are static tensors) in a CUDA graph; returns the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def measure(name: str, device, throughput_batch: int) -> dict:
    width, depth = SIZES[name]
    ours = EmgCTCModel(EmgCTCConfig.named(name)).to(device).eval()
    twin = Wav2Vec2Twin(width, depth).to(device).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_twin = sum(p.numel() for p in twin.parameters())
    row = {"model": name.upper(), "parameters": n_ours, "parameters_wav2vec2": n_twin}
    one = torch.randn(1, N_CHANNELS, N_TIMES, device=device)
    many = torch.randn(throughput_batch, N_CHANNELS, N_TIMES, device=device)
    with torch.inference_mode():
        for label, model in (("ours", ours), ("wav2vec2", twin)):
            row[f"latency_ms_{label}"] = 1e3 * time_call(
                lambda model=model: model(one), device, warmup=5, repeats=30
            )
            if device.type == "cuda":  # the same forward replayed from a CUDA graph: no launch gaps
                try:
                    replay = graph_replay(lambda model=model: model(one))
                    row[f"latency_ms_{label}_graph"] = 1e3 * time_call(replay, device, warmup=5, repeats=30)
                except RuntimeError as error:  # recorded, not fatal: the eager figures still stand
                    row[f"graph_error_{label}"] = str(error)[:300]

            def batch_run(model=model):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return model(many)

            seconds = time_call(batch_run, device, warmup=3, repeats=10)
            row[f"windows_per_s_{label}"] = throughput_batch / seconds
    row["latency_speedup"] = row["latency_ms_wav2vec2"] / row["latency_ms_ours"]
    if "latency_ms_ours_graph" in row and "latency_ms_wav2vec2_graph" in row:
        row["latency_speedup_graph"] = row["latency_ms_wav2vec2_graph"] / row["latency_ms_ours_graph"]
    row["throughput_ratio"] = row["windows_per_s_ours"] / row["windows_per_s_wav2vec2"]
    print(row, flush=True)
    return row


def timed_tail(step, history: torch.Tensor, steps: list, full: torch.Tensor, prefix: str = "") -> dict:
    """Feed history's samples after the first 4 s through `step(chunk) -> new frames`, 20 at a time, timing
    each step with CUDA events; `steps` holds the frames streamed before. Median and p90 step times and
    the largest difference of the whole stream from full-window inference."""
    times = []
    for i in range(8000, history.shape[2], 20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        steps.append(step(history[:, :, i : i + 20]))
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    step_ms = sorted(times[5:])  # the first steps warm up
    return {
        f"{prefix}step_ms_median": step_ms[len(step_ms) // 2],
        f"{prefix}step_ms_p90": step_ms[int(0.9 * len(step_ms))],
        f"{prefix}max_abs_diff_vs_full_window": float((torch.cat(steps, dim=1) - full).abs().max()),
    }


def streaming(device) -> dict:
    """Per-step latency of the causal TINY fed 20 samples at a time, after 4 s of history."""
    model = EmgCTCModel(EmgCTCConfig.named("tiny", causal=True)).to(device).eval()
    history = torch.randn(1, N_CHANNELS, 8000 + 20 * 50, device=device)
    with torch.inference_mode():
        full = model(history).log_probs
        state = model.start_stream(1)
        steps = [model.stream(state, history[:, :, i : i + 20]) for i in range(0, 8000, 20)]
        row = {"model": "TINY causal, streaming", "context_frames": full.shape[1]}
        row.update(timed_tail(lambda chunk: model.stream(state, chunk), history, steps, full))
    try:
        row.update(streaming_graph(model, history, full))
    except RuntimeError as error:  # recorded, not fatal: the eager figures still stand
        row["graph_error"] = str(error)[:300]
    return row


def streaming_graph(model: EmgCTCModel, history: torch.Tensor, full: torch.Tensor) -> dict:
    """The same stream with a preallocated KV cache: after 4 s of eager steps (fixed shapes from then
    on), one step is captured in a CUDA graph and replayed for the remaining 10 ms chunks (the copy of
    each new chunk into the graph's input is timed with it)."""
    with torch.inference_mode():
        state = model.start_stream(1, max_frames=full.shape[1] + 64)
        steps = [model.stream(state, history[:, :, i : i + 20]) for i in range(0, 8000, 20)]
        chunk = torch.zeros(1, N_CHANNELS, 20, device=history.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # recorded, not run: the state moves only on replay
            out = model.stream(state, chunk)

        def replay(new: torch.Tensor) -> torch.Tensor:
            chunk.copy_(new)
            graph.replay()
            return out.clone()

        return timed_tail(replay, history, steps, full, prefix="graph_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="tiny,small,large")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default="docs/results/emg2qwerty_speed.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 latency means float32
    rows = [measure(name, device, args.batch) for name in args.sizes.split(",")]
    if device.type == "cuda":
        rows.append(streaming(device))
        print(rows[-1], flush=True)
    write_results(args.out, device, rows, window_samples=N_TIMES, channels=N_CHANNELS, batch=args.batch)


if __name__ == "__main__":
    main()
