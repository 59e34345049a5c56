"""MOSS-Audio model dimensions, parsed from a checkpoint's config.json (no torch needed).

Both the build side (export, reference) and the runtime read dimensions through this module so
that a field is interpreted in one place only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config.json that is not a usable MOSS-Audio config."""


@dataclass(frozen=True)
class AudioEncoderConfig:
    d_model: int = 1280
    output_dim: int = 1280
    num_mel_bins: int = 128
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    downsample_rate: int = 8
    downsample_hidden_size: int = 480
    max_source_positions: int = 1500
    activation_function: str = "gelu"
    layer_norm_eps: float = 1e-5
    deepstack_encoder_layer_indexes: tuple[int, ...] = (8, 16, 24)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    @property
    def stem_features(self) -> int:
        # 128 mel bins halved three times = 16 rows, times the conv channels.
        return self.downsample_hidden_size * (self.num_mel_bins // 8)


@dataclass(frozen=True)
class LanguageConfig:
    hidden_size: int = 2560
    intermediate_size: int = 9728
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 40960
    vocab_size: int = 151936


@dataclass(frozen=True)
class MossAudioConfig:
    audio: AudioEncoderConfig
    language: LanguageConfig
    adapter_hidden_size: int = 8192
    deepstack_num_inject_layers: int = 3
    vocab_size: int = 151936
    bos_token_id: int = 151643
    eos_token_id: int = 151645
    tie_word_embeddings: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_deepstack(self) -> int:
        """Merger/injection count: the taps, capped by deepstack_num_inject_layers."""
        taps = len(self.audio.deepstack_encoder_layer_indexes)
        if self.deepstack_num_inject_layers is None:
            return taps
        return min(taps, int(self.deepstack_num_inject_layers))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MossAudioConfig":
        if not isinstance(data, dict):
            raise ConfigError("config.json does not hold a JSON object")
        if data.get("model_type") != "moss_audio":
            raise ConfigError(
                f"not a MOSS-Audio config: model_type is {data.get('model_type')!r}, "
                "expected 'moss_audio'"
            )
        for key in ("audio_config", "language_config"):
            if not isinstance(data.get(key), dict):
                raise ConfigError(f"config.json lacks the nested '{key}' object")
        audio = _pick(AudioEncoderConfig, data["audio_config"], "audio_config")
        lang_raw = dict(data["language_config"])
        # transformers 5 moved rope_theta into rope_parameters; accept both spellings.
        rope = lang_raw.get("rope_parameters") or lang_raw.get("rope_scaling") or {}
        if "rope_theta" not in lang_raw and isinstance(rope, dict) and "rope_theta" in rope:
            lang_raw["rope_theta"] = rope["rope_theta"]
        if isinstance(rope, dict) and rope.get("rope_type", "default") not in ("default", None):
            raise ConfigError(f"unsupported RoPE scaling {rope.get('rope_type')!r}")
        if lang_raw.get("head_dim") is None and "hidden_size" in lang_raw:
            lang_raw["head_dim"] = lang_raw["hidden_size"] // lang_raw["num_attention_heads"]
        language = _pick(LanguageConfig, lang_raw, "language_config")
        top = {k: data[k] for k in ("adapter_hidden_size", "deepstack_num_inject_layers",
                                    "vocab_size", "bos_token_id", "eos_token_id",
                                    "tie_word_embeddings") if data.get(k) is not None}
        top.setdefault("vocab_size", language.vocab_size)
        cfg = cls(audio=audio, language=language, raw=data, **top)
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "MossAudioConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"no config.json at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        a, lang = self.audio, self.language
        if a.num_mel_bins != 128:
            raise ConfigError(f"audio_config.num_mel_bins is {a.num_mel_bins}; MOSS-Audio uses 128")
        if a.d_model % a.encoder_attention_heads:
            raise ConfigError("audio_config.d_model is not a multiple of encoder_attention_heads")
        if lang.num_attention_heads % lang.num_key_value_heads:
            raise ConfigError("language_config.num_attention_heads is not a multiple of num_key_value_heads")
        if lang.head_dim % 2:
            raise ConfigError("language_config.head_dim must be even for RoPE")
        bad = [i for i in a.deepstack_encoder_layer_indexes if not 0 <= i < a.encoder_layers]
        if bad:
            raise ConfigError(f"deepstack_encoder_layer_indexes {bad} outside the {a.encoder_layers} encoder layers")
        if self.num_deepstack > lang.num_hidden_layers:
            raise ConfigError("more DeepStack injections than decoder layers")
        if self.vocab_size != lang.vocab_size:
            raise ConfigError(f"vocab_size {self.vocab_size} != language_config.vocab_size {lang.vocab_size}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dimensions (for bundle manifests); not the release config.json."""
        d = asdict(self)
        d.pop("raw", None)
        return d


def _pick(kind, data: dict[str, Any], where: str):
    """Build a dataclass from the known keys of `data`, type-checking each one."""
    values = {}
    for name, f in kind.__dataclass_fields__.items():
        if name not in data or data[name] is None:
            continue
        value = data[name]
        default = f.default
        try:
            if isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise TypeError
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            elif isinstance(default, tuple):
                value = tuple(int(v) for v in value)
            elif isinstance(default, str):
                value = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{name} has an unusable value {data[name]!r}") from None
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{where}.{name} is negative ({value})")
        values[name] = value
    return kind(**values)
