"""The MOSS-Audio (Qwen3) tokenizer rebuilt from vocab.json + merges.txt with `tokenizers`.

The release ships no tokenizer.json, so the byte-level BPE is assembled here the way transformers'
Qwen2Tokenizer does it: NFC normaliser, Qwen2 split regex, byte-level pre-tokenizer and decoder.
Added tokens come from tokenizer_config.json (added_tokens_decoder) and added_tokens.json; the
audio aliases of the MOSS processor (<|AUDIO|>, <|audio_bos|>, <|audio_eos|>) decode to their names.

Text is always text: `encode` never turns a string such as "<|im_end|>" or "<think>" into its
special id (it is split into ordinary byte-level pieces, as transformers does with
split_special_tokens=True, and for non-special added tokens too). Only the prompt builder places
special ids, by id. Otherwise a question, a system prompt or a transcript could rewrite the chat.
"""

from __future__ import annotations

import codecs
import json
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE

from edge_runtime.errors import CheckpointError
from edge_runtime.model_facts import AUDIO_END_ID, AUDIO_START_ID, AUDIO_TOKEN_ID

# The split pattern of Qwen2/Qwen3 byte-level BPE.
QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

MOSS_AUDIO_ALIASES = {
    "<|AUDIO|>": AUDIO_TOKEN_ID,
    "<|audio_bos|>": AUDIO_START_ID,
    "<|audio_eos|>": AUDIO_END_ID,
}


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """The GPT-2 byte-level map, inverted: printable stand-in character -> byte value."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = list(printable)
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shift)
            shift += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read tokenizer file {path}: {exc}") from None


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: an optional '#version' line, then 'left right' per line (LF or CRLF)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read tokenizer file {path}: {exc}") from None
    merges = []
    for number, line in enumerate(text.splitlines()):
        if not line or (number == 0 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"{path} line {number + 1} is not a 'left right' merge: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _added_tokens(directory: Path) -> dict[int, AddedToken]:
    """Added tokens by id: tokenizer_config.json's added_tokens_decoder, then added_tokens.json."""
    tokens: dict[int, AddedToken] = {}
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        for key, entry in _read_json(config_path).get("added_tokens_decoder", {}).items():
            tokens[int(key)] = AddedToken(
                entry["content"], single_word=entry.get("single_word", False),
                lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                normalized=entry.get("normalized", False), special=entry.get("special", False))
    extra_path = directory / "added_tokens.json"
    if extra_path.is_file():
        known = {tok.content for tok in tokens.values()}
        for content, token_id in _read_json(extra_path).items():
            if content not in known and int(token_id) not in tokens:
                tokens[int(token_id)] = AddedToken(content, normalized=False, special=False)
    return tokens


class MossTokenizer:
    """Byte-level BPE tokenizer of the checkpoint, with the MOSS audio aliases.

    `plain` is the BPE alone: it encodes all text, so no string can match an added token.
    `added` maps the added (control) tokens' ids to their AddedToken; decoding joins each id's
    bytes (an added token's text, an ordinary token's byte-level bytes) and reads them as UTF-8
    with U+FFFD for invalid bytes, which is what transformers' decode gives.
    """

    def __init__(self, plain: Tokenizer, added: dict[int, AddedToken], aliases: dict[str, int]) -> None:
        self._plain = plain
        self._added = dict(added)
        self._aliases = dict(aliases)
        self._added_ids = {tok.content: token_id for token_id, tok in self._added.items()}
        self.vocab_size = max(plain.get_vocab_size(), max(self._added, default=0) + 1,
                              max(self._aliases.values()) + 1)
        self._token_bytes_cache: dict[int, bytes] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as plain text: never a special or added token's id, no BOS/EOS.

        "<|im_end|>" in the text becomes the pieces of '<', '|', 'im', '_end', '|', '>'.
        """
        if not isinstance(text, str):
            raise TypeError(f"text to encode must be a str, not {type(text).__name__}")
        return self._plain.encode(text, add_special_tokens=False).ids

    def is_added(self, token_id: int) -> bool:
        """Whether the id is an added (control) token rather than an ordinary BPE piece."""
        return int(token_id) in self._added or int(token_id) in self._aliases.values()

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (invalid UTF-8 becomes U+FFFD, as in transformers)."""
        data = b"".join(self.token_bytes(i, skip_special_tokens) for i in ids)
        return data.decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary or added token (audio aliases included); None when unknown."""
        if token in self._aliases:
            return self._aliases[token]
        if token in self._added_ids:
            return self._added_ids[token]
        return self._plain.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Vocabulary string of an id (byte-level form for ordinary tokens); None when unknown."""
        added = self._added.get(int(token_id))
        return added.content if added is not None else self._plain.id_to_token(int(token_id))

    def is_special(self, token_id: int) -> bool:
        """Whether decode(skip_special_tokens=True) drops this id."""
        token = self._added.get(int(token_id))
        return token is not None and token.special

    def token_bytes(self, token_id: int, skip_special_tokens: bool = False) -> bytes:
        """The bytes one id stands for: an added token's UTF-8 text, an ordinary token's bytes
        (b'' for unknown ids and for special tokens when they are skipped)."""
        token_id = int(token_id)
        added = self._added.get(token_id)
        if added is not None:
            return b"" if (skip_special_tokens and added.special) else added.content.encode("utf-8")
        data = self._token_bytes_cache.get(token_id)
        if data is None:
            token = self._plain.id_to_token(token_id) if token_id >= 0 else None
            alphabet = _byte_level_alphabet()
            data = b"" if token is None else bytes(alphabet[c] for c in token)
            self._token_bytes_cache[token_id] = data
        return data


def load_tokenizer(directory: str | Path) -> MossTokenizer:
    """Build the tokenizer from a checkpoint (or bundle) directory's vocab.json + merges.txt,
    tokenizer_config.json and added_tokens.json. Raises CheckpointError when files are missing."""
    directory = Path(directory)
    for name in ("vocab.json", "merges.txt"):
        if not (directory / name).is_file():
            raise CheckpointError(f"tokenizer file {name} missing in {directory}")
    vocab = _read_json(directory / "vocab.json")
    merges = _read_merges(directory / "merges.txt")
    added = _added_tokens(directory)
    by_id = {token_id: content for content, token_id in vocab.items()}
    for token_id, token in added.items():
        if by_id.get(token_id, token.content) != token.content:
            raise CheckpointError(f"tokenizer in {directory}: added token {token.content!r} has "
                                  f"id {token_id}, which vocab.json gives to {by_id[token_id]!r}")
    taken_ids = set(by_id) | set(added)
    present = {tok.content for tok in added.values()}
    for alias, token_id in MOSS_AUDIO_ALIASES.items():
        if alias not in present and token_id not in taken_ids:
            added[token_id] = AddedToken(alias, normalized=False, special=True)
    # Added tokens stay out of the BPE: text is always encoded as text (see the module docstring).
    return MossTokenizer(_byte_level_bpe(vocab, merges), added, MOSS_AUDIO_ALIASES)


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Qwen2's byte-level BPE: NFC, the Qwen2 split regex, byte-level pieces and decoder."""
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                              continuing_subword_prefix="", end_of_word_suffix="",
                              fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


class IncrementalDetokenizer:
    """Turns generated ids into text piece by piece, never splitting a UTF-8 character.

    Bytes of an unfinished character are held back until it completes; the pieces joined equal
    `tokenizer.decode(all_ids, skip_special_tokens)` once `flush()` has been called.
    """

    def __init__(self, tokenizer: MossTokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one id; return the text that is now complete (may be '')."""
        return self._decoder.decode(self._tokenizer.token_bytes(token_id, self._skip))

    def flush(self) -> str:
        """Return what is held back (an unfinished character becomes U+FFFD) and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text
