"""From one window's generated tokens to timed segments, each with the tokens it came from.

The answer is parsed as its instruction asked (plain text, sentence timestamps, speakers, or
sound-event lines); each segment then gets the generated ids whose text begins inside the
stretch of the answer it was parsed from (its time brackets included), their mean
log-probability, the sampling temperature and whisper's compression ratio.
"""

from __future__ import annotations

from typing import Sequence

from .segments import Segment, compression_ratio
from .timestamps import parse_events, parse_timestamped
from .tokenizer import IncrementalDetokenizer

PARSERS = ("plain", "timestamps", "speakers", "events")


def answer_segments(tokenizer, token_ids: Sequence[int], logprobs: Sequence[float] | None,
                    answer: str, parse: str, window_len: float,
                    temperature: float = 0.0) -> list[Segment]:
    """Segments (times relative to the window) of one window's answer.

    `answer` is the window's final text (thinking removed), used as is for parse="plain"; the
    timed parsers read the decoded ids themselves, so that character positions map to tokens.
    """
    if parse not in PARSERS:
        raise ValueError(f"parse must be one of {', '.join(PARSERS)}, not {parse!r}")
    detok = IncrementalDetokenizer(tokenizer)
    starts, text = [], ""
    for token in token_ids:  # where each token's text begins in the decoded answer
        starts.append(len(text))
        text += detok.push(token)
    text += detok.flush()
    if parse in ("timestamps", "speakers"):
        found, ranges = parse_timestamped(text, window_len, speakers=parse == "speakers",
                                          with_spans=True)
    elif parse == "events":
        found, ranges = parse_events(text, window_len, with_spans=True)
    else:
        stripped = answer.strip()
        found, ranges = ([Segment(0.0, window_len, stripped)], [(0, len(text))]) if stripped else ([], [])
    logprobs = list(logprobs or [])
    window_avg = sum(logprobs) / len(logprobs) if logprobs else None
    for seg, members in zip(found, tokens_by_range(starts, ranges)):
        seg.tokens = [int(token_ids[i]) for i in members]
        picked = [logprobs[i] for i in members if i < len(logprobs)]
        average = sum(picked) / len(picked) if picked else window_avg
        seg.avg_logprob = None if average is None else round(average, 6)
        seg.temperature = float(temperature)
        seg.compression_ratio = compression_ratio(seg.text)
    return found


def tokens_by_range(starts: Sequence[int], ranges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indexes for each character range: a token goes to the first range (in text order)
    that ends after the token starts; tokens past the last range go to the last one."""
    groups: list[list[int]] = [[] for _ in ranges]
    if not ranges:
        return groups
    order = sorted(range(len(ranges)), key=lambda k: ranges[k])
    k = 0
    for index, begin in enumerate(starts):
        while k < len(order) - 1 and begin >= ranges[order[k]][1]:
            k += 1
        groups[order[k]].append(index)
    return groups
