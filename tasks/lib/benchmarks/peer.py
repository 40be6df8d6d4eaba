"""The benchmarks' peer: the same work written with Hugging Face's
`BertForMaskedLM` (or `RoFormerForMaskedLM`, for a RoFormer config) in
PyTorch, timed on the same shapes in the same process. Training: the UniLM
mask as a 4-D additive attention mask, autocast, AdamW, the target-only
cross-entropy of `seq2seq_cross_entropy`. Decoding: greedy titles, one
source at a time, the whole [source + title] recomputed at every step
under the UniLM mask (transformers has no cache for a UniLM prefix).
"""

import time

import numpy as np
import torch

from weights import mapping

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


def peer_model(config, arrays=None):
    """A transformers *ForMaskedLM of `config`'s family and shape: random,
    or holding `arrays` (Google-named, `weights.formats.model_arrays`)."""
    import transformers

    kind = {"roformer": "RoFormer"}.get(config.model_type, "Bert")
    values = {k: v for k, v in config.to_dict().items() if k != "model_type"}
    model_config = getattr(transformers, f"{kind}Config")(**values)
    model = getattr(transformers, f"{kind}ForMaskedLM")(model_config)
    if arrays is not None:
        load_arrays(model, arrays)
    return model


def load_arrays(model, arrays):
    """Copy our weights into a transformers model; every weight of it but
    fixed tables (RoFormer's sinusoids, position ids) must be filled."""
    state = {}
    for name, array in arrays.items():
        if mapping.hf_is_transposed(name):
            array = array.T
        hf = mapping.google_to_hf(name)
        hf = hf.replace("bert.", f"{model.base_model_prefix}.", 1)
        state[hf] = torch.from_numpy(np.ascontiguousarray(array))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [n for n in missing if "position" not in n and "decoder" not in n]
    if missing or unexpected:
        raise ValueError(f"peer weights: missing {missing}, {unexpected}")


def time_peer_decode(config, arrays, sources, maxlen, end_id):
    """(titles per second, titles) of the peer's greedy decoding of
    `sources` (token id lists, each [CLS] ... [SEP]) with our `arrays`,
    float32, eval mode, on the GPU torch sees, else the CPU."""
    device = torch_device()
    model = peer_model(config, arrays).to(device).eval()
    titles = []
    started = time.perf_counter()
    with torch.inference_mode():
        for source in sources:
            titles.append(peer_greedy(model, source, maxlen, end_id, device))
    if device == "cuda":
        torch.cuda.synchronize()
    return len(sources) / (time.perf_counter() - started), titles


def peer_greedy(model, source, maxlen, end_id, device):
    """One title: the argmax token after [source + title so far], until
    `end_id` or `maxlen` tokens."""
    title = []
    for _ in range(maxlen):
        ids = torch.tensor([source + title], device=device)
        segments = torch.tensor(
            [[0] * len(source) + [1] * len(title)], device=device
        )
        mask = unilm_additive_mask(ids, segments, torch.float32)
        logits = model(
            input_ids=ids, token_type_ids=segments, attention_mask=mask
        ).logits
        token = int(logits[0, -1].argmax())
        title.append(token)
        if token == end_id:
            break
    return title


def peer_step(config, precision, device, tokens, segments):
    """A fresh peer model and optimizer (seed 0), and a function doing one
    training step of them on `tokens`/`segments`, returning its loss."""
    torch.manual_seed(0)
    model = peer_model(config).to(device).train()
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
