"""The training benchmark's peer: the same step written with Hugging Face
`BertForMaskedLM` in PyTorch (the UniLM mask as a 4-D additive attention
mask, autocast, AdamW, the target-only cross-entropy of
`seq2seq_cross_entropy`), timed on the same shapes in the same process.
"""

import time

import torch

# transformers takes seconds to import and only the peer's model needs
# it: it is imported where that model is built.


def unilm_additive_mask(token_ids, segment_ids, dtype):
    """(batch, 1, L, L) additive mask: query i sees key j iff j is not
    padding and (j is source or j <= i); 0 where seen, dtype min where not.
    The same rule as tests/models/test_bert.py's loop, vectorised."""
    length = token_ids.shape[1]
    positions = torch.arange(length, device=token_ids.device)
    causal = positions[None, :] <= positions[:, None]  # (L, L): j <= i
    source = (segment_ids == 0)[:, None, None, :]  # key j source
    seen = (source | causal[None, None]) & (token_ids != 0)[:, None, None, :]
    mask = torch.zeros(seen.shape, dtype=dtype, device=token_ids.device)
    return mask.masked_fill(~seen, torch.finfo(dtype).min)


def torch_device():
    """Where the peer runs: 'cuda' when torch sees a GPU, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def time_peer(config, precision, warmup, steps, batch):
    """(seconds per step, peak bytes or None) of the peer on `batch`
    (token ids, segment ids): a model of our `config`'s shape, `warmup`
    untimed steps, then `steps` timed ones."""
    device = torch_device()
    tokens, segments = (
        torch.tensor(ids, dtype=torch.long, device=device) for ids in batch
    )
    step = peer_step(config, precision, device, tokens, segments)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()  # waits for the last step
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - started) / steps
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    step = loss = None  # frees the model and optimizer before empty_cache
    if device == "cuda":
        torch.cuda.empty_cache()
    return elapsed, peak


def peer_step(config, precision, device, tokens, segments):
    """A fresh peer model and optimizer (seed 0), and a function doing one
    training step of them on `tokens`/`segments`, returning its loss."""
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(
        transformers.BertConfig(**config.to_dict())
    )
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        precision
    )
    scaler = torch.amp.GradScaler(
        device, enabled=precision == "fp16" and device == "cuda"
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            device, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            mask = unilm_additive_mask(tokens, segments, torch.float32)
            logits = model(
                input_ids=tokens, token_type_ids=segments, attention_mask=mask
            ).logits
        logits = logits[:, :-1].float()
        weight = segments[:, 1:].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            tokens[:, 1:].reshape(-1),
            reduction="none",
        ).view_as(weight)
        loss = (nll * weight).sum() / weight.sum().clamp(min=1.0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return step
