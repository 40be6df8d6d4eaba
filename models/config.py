"""A BERT-family network's shape: `BertConfig`, read from Google's
`bert_config.json` or Hugging Face's `config.json` (the same field names),
and the one place a config given as a path, a dict or a config is resolved.
"""

import dataclasses
import json
import pathlib

from models import positions as P


@dataclasses.dataclass
class BertConfig:
    """Hyper-parameters of a BERT-family model.

    Field names are those of Google's `bert_config.json`, which Hugging Face's
    `config.json` for BERT shares, so either file loads as it is.
    `model_type` is the family, as Hugging Face's `config.json` names it:
    'bert' (and 'roberta'), 'roformer' (rotary positions) or 'nezha'
    (relative positions up to `max_relative_position`); the last two have
    no position embeddings (`models.positions`).
    """

    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    model_type: str = "bert"
    max_relative_position: int = 64

    def __post_init__(self):
        self.model_type = P.check_model_type(self.model_type)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_size(self):
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values):
        """Keep the known fields, ignore the rest (pooler settings...);
        refuse what would change the network (`check_supported`)."""
        P.check_supported(values)
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path):
        path = pathlib.Path(path)
        if path.is_dir():
            path = find_config_file(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config not found: {path}")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{error.lineno}: not valid JSON ({error.msg})"
            ) from None
        try:
            return cls.from_dict(values)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path):
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        pathlib.Path(path).write_text(text + "\n", encoding="utf-8")


def find_config_file(directory):
    """`bert_config.json` (Google) or `config.json` (Hugging Face, ours)."""
    for name in ("config.json", "bert_config.json"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"no config.json or bert_config.json in {directory}"
    )


def resolve_config(config_path, overrides, config_class=None):
    """A config (`config_class`, BertConfig by default; `models.t5` passes
    T5Config) from a path, a dict, a config or None + overrides."""
    config_class = config_class or BertConfig
    if config_path is None:
        config = config_class()
    elif isinstance(config_path, config_class):
        config = dataclasses.replace(config_path)
    elif isinstance(config_path, dict):
        config = config_class.from_dict(config_path)
    else:
        config = config_class.from_json(config_path)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise TypeError(f"unknown config overrides: {sorted(unknown)}")
    return dataclasses.replace(config, **overrides)
