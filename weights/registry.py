"""The well-known Chinese BERT (and RoFormer) checkpoints, as data, and
a downloader.

The task scripts take `--model NAME`: without the files they print where
to get them (`download_instructions`); with `--model-dir` they check the
local copy (`checksums`). Every loader works offline from local files.
URLs are the ones Google and HFL publish (Google's zip of the TF
checkpoint; the Hugging Face hub, to which HFL's README points, for the
PyTorch weights); RoFormer's are its Hugging Face port's (junnyu's), its
original release the zips on Baidu Pan that ZhuiyiTechnology's README
links. NEZHA and mT5 have no entry: their releases are Google Drive /
Baidu Pan links and `gs://` buckets, not files a URL fetches. No
checksums are published for these files, so `sha256` is None (not
verified) until someone records them from a trusted download;
`checksums` reports each file's digest so that a run can record it, and
`download(..., sha256=)` verifies one you trust.
"""

import dataclasses
import hashlib
import pathlib
import urllib.request

HF_HUB = "https://huggingface.co/{repo}/resolve/main/{file}"
# A local copy is complete when it holds either set: what `download` fetches,
# or the unpacked zip of the TF checkpoint as Google and HFL distribute it.
HUB_FILES = ("config.json", "vocab.txt", "pytorch_model.bin")
TF_FILES = (
    "bert_config.json",
    "vocab.txt",
    "bert_model.ckpt.index",
    "bert_model.ckpt.data-00000-of-00001",
)


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file to fetch; `sha256` is None where none is published."""

    url: str
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class Preset:
    """A checkpoint: where to get it and what a local copy must hold."""

    name: str
    description: str
    files: dict[str, RemoteFile]
    original: str
    layouts: tuple[tuple[str, ...], ...] = (HUB_FILES, TF_FILES)


def _hub(repo, *names):
    return {
        name: RemoteFile(HF_HUB.format(repo=repo, file=name)) for name in names
    }


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            name="chinese_L-12_H-768_A-12",
            description="Google BERT-base, Chinese (12 layers, 768 hidden).",
            files=_hub("google-bert/bert-base-chinese", *HUB_FILES),
            original="https://storage.googleapis.com/bert_models/"
            "2018_11_03/chinese_L-12_H-768_A-12.zip",
        ),
        Preset(
            name="chinese_wwm_L-12_H-768_A-12",
            description="HFL BERT-wwm, Chinese: whole word masking, Wikipedia.",
            files=_hub("hfl/chinese-bert-wwm", *HUB_FILES),
            original="https://github.com/ymcui/Chinese-BERT-wwm",
        ),
        Preset(
            name="chinese_wwm_ext_L-12_H-768_A-12",
            description="HFL BERT-wwm-ext, Chinese: whole word masking, "
            "Wikipedia + extended data (5.4B tokens).",
            files=_hub("hfl/chinese-bert-wwm-ext", *HUB_FILES),
            original="https://github.com/ymcui/Chinese-BERT-wwm",
        ),
        Preset(
            name="chinese_roberta_wwm_ext_L-12_H-768_A-12",
            description="HFL RoBERTa-wwm-ext, Chinese: a BERT-base trained "
            "RoBERTa-style (no NSP, longer) with whole word masking; load "
            "with model='bert'.",
            files=_hub("hfl/chinese-roberta-wwm-ext", *HUB_FILES),
            original="https://github.com/ymcui/Chinese-BERT-wwm",
        ),
        Preset(
            name="chinese_roformer_L-12_H-768_A-12",
            description="RoFormer-Chinese base (ZhuiyiTechnology): BERT-base "
            "with rotary positions, a word + character vocabulary; "
            "model_type 'roformer'.",
            files=_hub("junnyu/roformer_chinese_base", *HUB_FILES),
            original="https://github.com/ZhuiyiTechnology/roformer",
        ),
    )
}


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(
            f"unknown checkpoint {name!r}; known: {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name]


def download(
    name: str, dest, sha256: dict[str, str] | None = None, progress: bool = True
) -> pathlib.Path:
    """Fetch every file of preset `name` into the directory `dest`.

    `sha256` maps file names to expected digests and overrides the
    registry's. Files already present (and matching a known digest) are
    kept, so an interrupted download resumes file by file.
    """
    preset = get(name)
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for filename, remote in preset.files.items():
        digest = (sha256 or {}).get(filename, remote.sha256)
        target = dest / filename
        if target.is_file() and (digest is None or _sha256(target) == digest):
            continue
        fetch(remote.url, target, digest, progress=progress)
    return dest


def fetch(
    url: str, path, sha256: str | None = None, progress: bool = True
) -> pathlib.Path:
    """Download one URL to `path`, verifying `sha256` when given.

    Written to `path.part` first and renamed once verified, so a broken or
    tampered download never sits where a loader would find it.
    """
    from tqdm import tqdm

    path = pathlib.Path(path)
    partial = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=path.name,
            disable=not progress,
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    if sha256 is not None and digest.hexdigest() != sha256.lower():
        partial.unlink()
        raise ValueError(
            f"{url}: sha256 {digest.hexdigest()} does not match the expected "
            f"{sha256}; the download was deleted"
        )
    partial.replace(path)
    return path


def verify_files(name: str, directory) -> pathlib.Path:
    """Check that `directory` holds one complete layout of preset `name`."""
    preset = get(name)
    directory = pathlib.Path(directory)
    missing = [
        [f for f in layout if not (directory / f).is_file()]
        for layout in preset.layouts
    ]
    if all(missing):
        closest = min(missing, key=len)
        raise FileNotFoundError(
            f"{directory} is not a complete copy of {name}: it lacks "
            f"{', '.join(closest)}; get the files with "
            f"weights.registry.download({name!r}, {str(directory)!r})"
        )
    return directory


def download_instructions(name: str) -> str:
    """Where to get preset `name`, as lines a user can act on."""
    preset = get(name)
    lines = [f"{name}: {preset.description}", "Files (into one directory):"]
    lines += [
        f"  {file}  {remote.url}" for file, remote in preset.files.items()
    ]
    lines += [
        f"or the original release: {preset.original}",
        'or, with Python: python -c "from weights.registry import '
        f"download; download({name!r}, 'DIR')\"",
    ]
    return "\n".join(lines)


def checksums(name: str, directory) -> dict[str, str]:
    """sha256 of each file of the complete layout of `name` in `directory`.

    Raises FileNotFoundError when no layout is complete (`verify_files`)
    and ValueError when a file differs from a digest the registry knows.
    """
    preset = get(name)
    directory = verify_files(name, directory)
    layout = next(
        layout
        for layout in preset.layouts
        if all((directory / file).is_file() for file in layout)
    )
    digests = {file: _sha256(directory / file) for file in layout}
    for file, digest in digests.items():
        remote = preset.files.get(file)
        if remote and remote.sha256 and remote.sha256 != digest:
            raise ValueError(
                f"{directory / file}: sha256 {digest} is not the "
                f"published {remote.sha256} of {name}; download it again"
            )
    return digests


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
